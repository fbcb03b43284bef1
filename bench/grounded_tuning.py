"""Fine-tune, retrieval, or both, on the Debian FAQ (issue 13's target): the bundled SmolLM2 against
the same model tuned on grounded (RAFT) examples from the FAQ, each with and without retrieval.

Every step is the CLI a user runs, on a fresh data home:

    1. localllm ingest debian-faq.en.pdf --collection faq
    2. localllm dataset docs --collection faq --grounded --max-pairs P --out grounded.jsonl
       (the bundled model writes a question and answer per passage; the app's retriever and prompt
       make each example; a fifth hold only distractors and target the decline)
    3. localllm finetune --data grounded.jsonl --name grounded --max-steps S --max-length L
    4. localllm eval compare refs.jsonl --collection faq --models bundled,<tuned adapter>
    5. localllm eval answers on the FAQ's out-of-corpus questions with each model (declines)

The questions of steps 4 and 5 are hand-written (bench/eval/faq_qa.jsonl, every third line, and
bench/eval/unanswerable*.jsonl), never the generated ones the model trained on. A reference answer
is the FAQ's own answer to the question: from its `answer_start` on the gold page, up to the end of
its second sentence (at most REFERENCE_WORDS words).

    python bench/grounded_tuning.py [--pairs 120] [--steps 36] [--every 3] [--decline-share 0.2]
        [--keep DATA_HOME] [--results grounded_tuning]

Writes bench/results/grounded_tuning.json and the grounded_tuning table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_results

ROOT = Path(__file__).resolve().parent.parent
FAQ = ROOT.parent / "shared" / "corpus" / "debian-faq.en.pdf"
QUESTIONS = ROOT / "bench" / "eval" / "faq_qa.jsonl"
UNANSWERABLE = [
    ROOT / "bench" / "eval" / n for n in ("unanswerable.jsonl", "unanswerable_faq.jsonl")
]
REFERENCE_WORDS = 60
COLLECTION = "faq"
BASE, TUNED = "base (bundled SmolLM2-135M)", "grounded-tuned"


def cached(path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A step's JSON, kept in the data home so that a rerun goes on from the last finished step."""
    if path.exists():
        return json.loads(path.read_text())
    result = make()
    path.write_text(json.dumps(result))
    return result


def page_texts(pdf: Path) -> list[str]:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        return [" ".join(doc[i].get_textpage().get_text_range().split()) for i in range(len(doc))]
    finally:
        doc.close()


def reference(text: str, start: str) -> str | None:
    at = text.find(start)
    if at < 0:
        return None
    words = text[at:].replace("\ufffe ", "").replace("\ufffe", "").split()[:REFERENCE_WORDS]
    joined = " ".join(words)
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", joined)]
    return joined[: ends[1]] if len(ends) >= 2 else joined


def trained_questions(data: Path) -> set[str]:
    """The questions the model wrote for training, as the prompts end with them."""
    asked = set()
    for line in data.read_text().splitlines():
        prompt = json.loads(line)["messages"][-2]["content"]
        question = prompt.rsplit("Question:", 1)[-1].split("Answer from the sources")[0]
        asked.add(" ".join(question.lower().split()))
    return asked


def chosen_on(every: int = 3) -> set[str]:
    """The FAQ questions the decline share was chosen on (one in 3, stop 22): not held out."""
    lines = QUESTIONS.read_text().splitlines()
    return {json.loads(line)["question"] for i, line in enumerate(lines) if i % every == 0}


def reference_set(out: Path, every: int, trained: set[str]) -> tuple[int, int]:
    """Every `every`th FAQ question with its reference answer, but none the model trained on;
    how many were kept and how many left out as trained on."""
    texts = page_texts(FAQ)
    kept = dropped = 0
    with out.open("w") as f:
        for i, line in enumerate(QUESTIONS.read_text().splitlines()):
            item = json.loads(line)
            if i % every or not item.get("answer_start"):
                continue
            if " ".join(item["question"].lower().split()) in trained:
                dropped += 1
                continue
            answer = reference(texts[item["page"] - 1], item["answer_start"])
            if answer is None:
                continue
            item["answer"] = answer
            f.write(json.dumps(item) + "\n")
            kept += 1
    return kept, dropped


def run(env: dict[str, str], *args: str) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "localllm.cli", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=env["LOCALLLM_HOME_FOR_BENCH"],
    )
    if done.returncode != 0:
        raise RuntimeError(f"localllm {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    result["_seconds"] = round(time.perf_counter() - started, 1)
    print(
        f"localllm {args[0]} {args[1] if len(args) > 1 else ''}: {result['_seconds']} s", flush=True
    )
    return result


def table(rows: list[dict[str, Any]], declines: dict[str, float] | None = None) -> str:
    """The compare rows as a table; with `declines` (per label), the out-of-corpus column too."""
    out_column = " out-of-corpus declined |" if declines is not None else ""
    lines = [
        "| model | retrieval | token F1 | ROUGE-L | citation precision | cites the answer's page "
        "| the model's own [n]: precision "
        f"| declined (answerable) |{out_column} perplexity of the reference | s / answer |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if declines is not None else "") + "---|---|",
    ]
    for r in rows:
        cp = _share(r["citation_precision"])
        gold = _share(r.get("gold_page_cited"))
        own = _share(r.get("model_citation_precision"))
        ppl = "-" if r.get("perplexity") is None else f"{r['perplexity']:.1f}"
        out = ""
        if declines is not None:
            out = f" {declines[r['label']]:.2f} |" if r["retrieval"] else " - |"
        seconds = "-" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        lines.append(
            f"| {r['label']} | {'yes' if r['retrieval'] else 'no'} | {r['f1']:.3f} "
            f"| {r['rouge_l']:.3f} | {cp} | {gold} | {own} | {r['declined']:.2f} |{out} {ppl} "
            f"| {seconds} |"
        )
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def subset_rows(
    compared: dict[str, Any], labels: dict[str, str], questions: set[str]
) -> list[dict[str, Any]]:
    """The compare rows again over only `questions`, from its per-answer details."""
    rows = []
    for r in compared["rows"]:
        answers = [
            a
            for a in compared["details"]
            if (a["model"], a["retrieval"]) == (r["model"], r["retrieval"])
            and a["question"] in questions
        ]
        precision = [
            a["citation_precision"] for a in answers if a["citation_precision"] is not None
        ]
        gold = [a["cites_gold_page"] for a in answers if a["cites_gold_page"] is not None]
        own = [a.get("model_citation_precision") for a in answers]
        own_shares = [p for p in own if p is not None]
        rows.append(
            {
                "label": labels[r["model"]],
                "retrieval": r["retrieval"],
                "questions": len(answers),
                "f1": _mean([a["f1"] for a in answers]) or 0.0,
                "rouge_l": _mean([a["rouge_l"] for a in answers]) or 0.0,
                "citation_precision": _mean(precision) if r["retrieval"] else None,
                "gold_page_cited": _mean([float(g) for g in gold]) if r["retrieval"] else None,
                "model_citation_precision": _mean(own_shares) if r["retrieval"] else None,
                "declined": _mean([float(a["declined"]) for a in answers]) or 0.0,
                "perplexity": None,
                "seconds": _mean([a["seconds"] for a in answers]),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=120)
    parser.add_argument("--steps", type=int, default=36)
    parser.add_argument("--every", type=int, default=3, help="every Nth FAQ question is asked")
    parser.add_argument("--decline-share", type=float, default=0.2)
    parser.add_argument("--results", default="grounded_tuning", help="results/NAME.json")
    parser.add_argument("--keep", type=Path, help="the data home to use and keep (default: temp)")
    args = parser.parse_args()

    home = args.keep or Path(tempfile.mkdtemp(prefix="grounded-tuning-"))
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "LOCALLLM_MODELS_DIR": str(home / "models"),
        "LOCALLLM_DOCS_STORE": str(home / "docs_store"),
        "LOCALLLM_RUNS_DIR": str(home / "runs"),
        "LOCALLLM_CACHE_DIR": str(ROOT / "cache"),
        "LOCALLLM_CONFIG": str(home / "absent.toml"),
        "LOCALLLM_HOME_FOR_BENCH": str(home),
    }
    unanswerable = home / "unanswerable.jsonl"
    unanswerable.write_text("".join(p.read_text() for p in UNANSWERABLE))

    steps: dict[str, Any] = {}
    if not (home / "docs_store").exists():
        steps["ingest"] = run(env, "ingest", str(FAQ), "--collection", COLLECTION)
    data, made = home / "grounded.jsonl", home / "grounded.json"
    if not made.exists():
        steps["dataset"] = run(
            env, "dataset", "docs", "--collection", COLLECTION, "--grounded",
            "--max-pairs", str(args.pairs), "--out", str(data),
            "--decline-share", str(args.decline_share),
        )  # fmt: skip
        made.write_text(json.dumps(steps["dataset"]))
    steps["dataset"] = json.loads(made.read_text())
    max_length = int(steps["dataset"]["max_length"])
    refs = home / "refs.jsonl"
    asked, trained_on = reference_set(refs, args.every, trained_questions(data))
    tuned = cached(home / "finetune.json", lambda: run(
        env, "finetune", "--data", str(data), "--name", "grounded", "--quiet",
        "--max-steps", str(args.steps), "--max-length", str(max_length),
    ))  # fmt: skip
    adapter = Path(tuned["adapter_gguf"]).name
    models = {"bundled": BASE, adapter: TUNED}
    compared = cached(home / "compare.json", lambda: run(
        env, "eval", "compare", str(refs), "--collection", COLLECTION,
        "--models", ",".join(models), "--details",
    ))  # fmt: skip
    declines: dict[str, float] = {}
    answers: dict[str, Any] = {}
    for model, label in models.items():
        answered = cached(home / f"unanswerable-{label}.json", lambda m=model: run(
            env, "eval", "answers", str(unanswerable), "--collection", COLLECTION,
            "--model", m, "--details",
        ))  # fmt: skip
        answers[label] = answered
        declines[label] = float(answered["declined_unanswerable"])
    rows = [{**r, "label": TUNED if r["model"] == adapter else BASE} for r in compared["rows"]]
    labels = {r["model"]: r["label"] for r in rows}
    asked_questions = {a["question"] for a in compared["details"]}
    held_out = asked_questions - chosen_on()
    split = {
        "held_out": subset_rows(compared, labels, held_out),
        "chosen_on": subset_rows(compared, labels, asked_questions - held_out),
    }
    payload = {
        "machine": machine(),
        "questions": asked,
        "left_out_as_trained_on": trained_on,
        "unanswerable": len(unanswerable.read_text().splitlines()),
        "pairs": args.pairs,
        "decline_share": args.decline_share,
        "steps": args.steps,
        "max_length": max_length,
        "dataset": steps.get("dataset"),
        "finetune": tuned,
        "rows": rows,
        "unanswerable_declined": declines,
        "eval_answers": answers,
        "split": split,
        "compare_details": compared["details"],
    }
    made_set = steps["dataset"]
    md = (
        f"### Fine-tune, retrieval, or both (`bench/grounded_tuning.py`, {payload['machine']['cpus']} "
        f"CPUs, {payload['machine']['when']})\n\n"
        f"Debian FAQ: {asked} hand-written questions (one in {args.every} of "
        f"bench/eval/faq_qa.jsonl, {trained_on} left out because the model had written the same "
        f"question for training) with the FAQ's own answers as references, and "
        f"{payload['unanswerable']} out-of-corpus questions. Tuned on {made_set['examples']} "
        f"grounded examples ({made_set['declines']} of them declines, --decline-share "
        f"{args.decline_share:g}) that the bundled model "
        f"wrote from {args.pairs} passages ({made_set['pairs']} pairs usable), {args.steps} steps "
        f"of LoRA at the app's defaults, {max_length} tokens per example, "
        f"{tuned.get('_seconds', '?')} s.\n\n" + table(rows, declines)
    )
    for part, rows_of in split.items():
        if rows_of and rows_of[0]["questions"] and len(held_out) < len(asked_questions):
            what = {
                "held_out": "never used for a choice (not the one in 3 the decline share was "
                "chosen on in stop 22)",
                "chosen_on": "the decline share was chosen on (one in 3, stop 22)",
            }[part]
            md += (
                f"\n\nThe {rows_of[0]['questions']} questions {what}, from the same answers:\n\n"
                + table(rows_of)
            )
    out = write_results(args.results, payload, md)
    print(md)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
