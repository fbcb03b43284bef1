"""Preference tuning from feedback, judged by its answers (issue 13): the bundled SmolLM2 against the
same model tuned with DPO on thumbs a user gave, on FAQ questions it was never tuned on.

The feedback is what a user who knows the FAQ would give in the chat, saved as the app saves it:

    1. localllm ingest debian-faq.en.pdf --collection faq
    2. localllm eval compare train.jsonl --models bundled --retrieval without: the base's own answer
       to each training question (two in 3 of bench/eval/faq_qa.jsonl)
    3. one saved conversation per answer in the conversation store: the base's answer thumbed down
       (unless it already matches the FAQ, token F1 >= KEEP_F1), the FAQ's own answer thumbed up
    4. localllm finetune --method dpo [--four-bit]: the pairs of the saved thumbs, at the defaults
    5. localllm eval compare held.jsonl --models bundled,<dpo adapter>: the other FAQ questions (one
       in 3, the ones bench/grounded_tuning.py asks by default), with and without retrieval

A reference answer is the FAQ's own answer (bench/grounded_tuning.py's `reference`).

    python bench/dpo_tuning.py [--four-bit] [--steps N] [--keep DATA_HOME] [--results dpo_tuning]

Writes bench/results/<results>.json and its table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_results
from grounded_tuning import (
    COLLECTION,
    FAQ,
    QUESTIONS,
    ROOT,
    cached,
    page_texts,
    reference,
    run,
    table,
)

KEEP_F1 = 0.5  # a base answer this close to the FAQ's is not one a user would thumb down
BASE, TUNED = "base (bundled SmolLM2-135M)", "DPO-tuned"


def split_questions(home: Path) -> tuple[Path, Path]:
    """(train.jsonl, held.jsonl): every FAQ question with a reference, the third ones held out."""
    texts = page_texts(FAQ)
    train, held = [], []
    for i, line in enumerate(QUESTIONS.read_text().splitlines()):
        item = json.loads(line)
        if not item.get("answer_start"):
            continue
        answer = reference(texts[item["page"] - 1], item["answer_start"])
        if answer is None:
            continue
        (held if i % 3 == 0 else train).append({**item, "answer": answer})
    paths = home / "train.jsonl", home / "held.jsonl"
    for path, items in zip(paths, (train, held), strict=True):
        path.write_text("".join(json.dumps(x) + "\n" for x in items))
    return paths


def save_feedback(store_path: Path, answers: list[dict[str, Any]]) -> dict[str, int]:
    """Each question's base answer disliked and the FAQ's answer liked, as the chat saves them."""
    from localllm.chat.conversations import ConversationStore

    kept = disliked = 0
    with ConversationStore(store_path) as store:
        for a in answers:
            if a["f1"] >= KEEP_F1:
                kept += 1
                continue
            for text, rating in ((a["answer"], -1), (a["reference"], 1)):
                conversation = store.create()
                store.add_message(conversation, "user", a["question"])
                store.rate(store.add_message(conversation, "assistant", text), rating)
            disliked += 1
    return {"pairs": disliked, "base_answers_kept": kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--four-bit", action="store_true", help="DPO over the 4-bit base")
    parser.add_argument("--steps", type=int, help="DPO steps (default: the app's)")
    parser.add_argument("--results", default="dpo_tuning", help="results/NAME.json")
    parser.add_argument("--keep", type=Path, help="the data home to use and keep (default: temp)")
    args = parser.parse_args()

    home = args.keep or Path(tempfile.mkdtemp(prefix="dpo-tuning-"))
    home.mkdir(parents=True, exist_ok=True)
    conversations = home / "conversations.sqlite3"
    env = {
        **os.environ,
        "LOCALLLM_MODELS_DIR": str(home / "models"),
        "LOCALLLM_DOCS_STORE": str(home / "docs_store"),
        "LOCALLLM_RUNS_DIR": str(home / "runs"),
        "LOCALLLM_CONVERSATIONS_PATH": str(conversations),
        "LOCALLLM_CACHE_DIR": str(ROOT / "cache"),
        "LOCALLLM_CONFIG": str(home / "absent.toml"),
        "LOCALLLM_HOME_FOR_BENCH": str(home),
    }
    if not (home / "docs_store").exists():
        run(env, "ingest", str(FAQ), "--collection", COLLECTION)
    train, held = split_questions(home)
    base_answers = cached(home / "base-answers.json", lambda: run(
        env, "eval", "compare", str(train), "--collection", COLLECTION, "--models", "bundled",
        "--retrieval", "without", "--details",
    ))  # fmt: skip
    feedback = cached(
        home / "feedback.json", lambda: save_feedback(conversations, base_answers["details"])
    )
    tuning = ["finetune", "--method", "dpo", "--name", "dpo", "--quiet"]
    tuning += ["--four-bit"] if args.four_bit else []
    tuning += ["--max-steps", str(args.steps)] if args.steps else []
    tuned = cached(home / "finetune.json", lambda: run(env, *tuning))
    adapter = Path(tuned["adapter_gguf"]).name
    compared = cached(home / "compare.json", lambda: run(
        env, "eval", "compare", str(held), "--collection", COLLECTION,
        "--models", f"bundled,{adapter}", "--details",
    ))  # fmt: skip
    rows = [{**r, "label": TUNED if r["model"] == adapter else BASE} for r in compared["rows"]]
    status = json.loads((home / "runs" / tuned["run"] / "status.json").read_text())
    questions = len(held.read_text().splitlines())
    payload = {
        "machine": machine(),
        "train_questions": len(train.read_text().splitlines()),
        "held_out_questions": questions,
        "feedback": feedback,
        "four_bit": args.four_bit,
        "finetune": tuned,
        "training": {
            k: status.get(k)
            for k in (
                "step",
                "eval_loss_before",
                "eval_loss_after",
                "preference_accuracy",
                "reward_margin",
                "general_perplexity_before",
                "general_perplexity_after",
                "four_bit_layers",
            )
        },
        "rows": rows,
        "details": compared.get("details"),
    }
    t = payload["training"]
    base_how = "a 4-bit (NF4) base" if args.four_bit else "LoRA"
    md = (
        f"### Preference tuning from feedback (`bench/dpo_tuning.py`, "
        f"{payload['machine']['cpus']} CPUs, {payload['machine']['when']})\n\n"
        f"Debian FAQ. Feedback on {payload['train_questions']} FAQ questions, saved as the chat "
        f"saves it: the base's answer (without retrieval) thumbed down and the FAQ's own answer "
        f"thumbed up, {feedback['pairs']} pairs ({feedback['base_answers_kept']} base answers "
        f"already close to the FAQ's left out). DPO over {base_how} at the app's defaults, "
        f"{t['step']} steps, {tuned.get('_seconds', '?')} s: held-out preference accuracy "
        f"{t['preference_accuracy']}, general perplexity {t['general_perplexity_before']:.2f} -> "
        f"{t['general_perplexity_after']:.2f}. Scored on {questions} other hand-written FAQ "
        f"questions, never tuned on, against the FAQ's answers.\n\n" + table(rows)
    )
    out = write_results(args.results, payload, md)
    print(md)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
