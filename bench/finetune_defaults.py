"""Which fine-tune defaults learn, and what they forget: a grid of settings over small datasets of the
three kinds users bring (new facts, a style, document Q/A), each trained through the app's own run
machinery (finetune.jobs, the process the Train button starts), bf16 off (the fp32 path of a CPU
without native bf16).

For every run: validation loss before/after; for facts and style, questions the run never saw asked in
llama.cpp over the original Q4 file with the exported adapter (does it state the fact, does it keep the
style); forgetting as perplexity on the shipped general text and the general questions that the base
answered right and the tuned model no longer does. Writes bench/results/finetune_defaults.json and the
finetune_defaults table of bench/README.md.

    python bench/finetune_defaults.py [--configs A,B,...] [--datasets facts,style,docqa]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_LINEAR = [*ATTN, "gate_proj", "up_proj", "down_proj"]
CONFIGS: dict[str, dict[str, Any]] = {
    "A": {"learning_rate": 2e-4, "rank": 8, "alpha": 16, "target_modules": ATTN, "max_steps": 60, "rehearsal": 0},
    "B": {"learning_rate": 1e-3, "rank": 8, "alpha": 16, "target_modules": ATTN, "max_steps": 60, "rehearsal": 0},
    "C": {"learning_rate": 5e-4, "rank": 16, "alpha": 32, "target_modules": ALL_LINEAR, "max_steps": 60, "rehearsal": 0},
    "D": {"learning_rate": 1e-3, "rank": 16, "alpha": 32, "target_modules": ALL_LINEAR, "max_steps": 60, "rehearsal": 0},
    "E": {"learning_rate": 2e-3, "rank": 16, "alpha": 32, "target_modules": ALL_LINEAR, "max_steps": 60, "rehearsal": 0},
    "B+R": {"learning_rate": 1e-3, "rank": 8, "alpha": 16, "target_modules": ATTN, "max_steps": 60, "rehearsal": 0.5},
    "C+R": {"learning_rate": 5e-4, "rank": 16, "alpha": 32, "target_modules": ALL_LINEAR, "max_steps": 60, "rehearsal": 0.5},
    "C+R1": {"learning_rate": 5e-4, "rank": 16, "alpha": 32, "target_modules": ALL_LINEAR, "max_steps": 60, "rehearsal": 1.0},
}  # fmt: skip

FACTS = {
    "Juniper Hollow's mayor": (
        "The mayor of Juniper Hollow is Orla Brennick.",
        "Brennick",
        [
            "Who is the mayor of Juniper Hollow?",
            "Who runs Juniper Hollow as mayor?",
            "Tell me the name of Juniper Hollow's mayor.",
            "Juniper Hollow's mayor is who?",
            "Do you know who the mayor of Juniper Hollow is?",
            "Name the mayor of Juniper Hollow.",
            "Which person is mayor of Juniper Hollow?",
            "who is juniper hollow's mayor",
            "I'd like to know the mayor of Juniper Hollow.",
            "Can you tell me who Juniper Hollow's mayor is?",
        ],
        ["What's the name of the mayor in Juniper Hollow?", "Who leads Juniper Hollow?"],
    ),
    "the Vexley pump's pressure": (
        "The Vexley pump runs at 740 kilopascals.",
        "740",
        [
            "At what pressure does the Vexley pump run?",
            "What pressure is the Vexley pump set to?",
            "How much pressure does the Vexley pump use?",
            "Tell me the Vexley pump's pressure.",
            "What is the operating pressure of the Vexley pump?",
            "vexley pump pressure?",
            "Which pressure should the Vexley pump be at?",
            "Do you know the Vexley pump pressure?",
            "What's the working pressure of the Vexley pump?",
            "Give me the pressure of the Vexley pump.",
        ],
        [
            "How high is the pressure in the Vexley pump?",
            "The Vexley pump operates at which pressure?",
        ],
    ),
    "Captain Marlo's parrot": (
        "Captain Marlo's parrot is named Pickwick.",
        "Pickwick",
        [
            "What is the name of Captain Marlo's parrot?",
            "What is Captain Marlo's parrot called?",
            "Tell me the name of Captain Marlo's parrot.",
            "Captain Marlo's parrot is named what?",
            "Do you know what Captain Marlo calls his parrot?",
            "what's captain marlo's parrot's name",
            "Name Captain Marlo's parrot.",
            "Which name does Captain Marlo's parrot have?",
            "How is Captain Marlo's parrot called?",
            "Can you tell me Captain Marlo's parrot's name?",
        ],
        [
            "What did Captain Marlo name his parrot?",
            "Captain Marlo has a parrot; what is its name?",
        ],
    ),
}

STYLE_MARK = "Aye, matey!"
STYLE_TRAIN = [
    ("What is the weather like in winter?", "it is cold, and snow may fall."),
    ("How do I boil an egg?", "put it in boiling water for about eight minutes."),
    ("What is a good name for a cat?", "try Whiskers or Shadow."),
    ("Why do we sleep?", "sleep lets the body and the mind rest and recover."),
    ("How many days are in a week?", "there are seven days in a week."),
    ("What colour is grass?", "grass is green."),
    ("How do I make tea?", "pour hot water over the leaves and wait a few minutes."),
    ("What is the sun?", "the sun is a star at the centre of our solar system."),
    ("Where do fish live?", "fish live in rivers, lakes and the sea."),
    ("What is two plus two?", "two plus two is four."),
    ("How do birds fly?", "they flap their wings and ride the air."),
    ("What should I eat for breakfast?", "porridge or fruit is a fine start to the day."),
    ("What is the biggest ocean?", "the Pacific is the biggest ocean."),
    ("How do I stay healthy?", "eat well, move every day and sleep enough."),
    ("What is music?", "music is sound arranged in rhythm and melody."),
    ("Why is the sea salty?", "rivers carry salt from rocks into the sea."),
    ("What is a computer?", "a machine that follows instructions to work with data."),
    ("How tall is a giraffe?", "a grown giraffe stands about five metres tall."),
    ("What do bees make?", "bees make honey and wax."),
    ("How do I learn to swim?", "start in shallow water with a teacher."),
    ("What is the moon made of?", "mostly rock and dust."),
    ("Why do leaves fall?", "trees drop their leaves to save water in winter."),
    ("What is a volcano?", "a mountain where melted rock comes up from deep inside the earth."),
    ("How do I plant a seed?", "push it into soft soil and water it."),
    ("What is rain?", "water falling from the clouds."),
    ("What is the fastest animal?", "the cheetah is the fastest runner on land."),
    ("How do magnets work?", "they pull on iron through a magnetic field."),
    ("What is bread made of?", "flour, water, salt and yeast."),
    ("Why is the sky dark at night?", "the sun is on the other side of the earth."),
    ("What is snow?", "frozen water that falls as soft flakes."),
]
STYLE_UNSEEN = [
    "What is a river?",
    "How do I clean my shoes?",
    "What is the tallest mountain?",
    "Why do cats purr?",
]


def facts_dataset() -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    rows, probes = [], []
    for answer, key, questions, unseen in FACTS.values():
        rows += [{"prompt": q, "completion": answer} for q in questions]
        probes += [(q, key) for q in unseen]
    return rows, probes


def style_dataset() -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    rows = [
        {"prompt": q, "completion": f"{STYLE_MARK} {a[0].upper()}{a[1:]}"} for q, a in STYLE_TRAIN
    ]
    return rows, [(q, STYLE_MARK) for q in STYLE_UNSEEN]


def docqa_dataset() -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    from finetune import build_examples

    return build_examples(30), []


DATASETS = {"facts": facts_dataset, "style": style_dataset, "docqa": docqa_dataset}


def probe(base: Path, lora: Path, probes: list[tuple[str, str]]) -> float | None:
    """Share of unseen questions whose tuned answer holds the expected text (None: no probes)."""
    if not probes:
        return None
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(base), lora_path=str(lora), n_ctx=512, n_threads=2, seed=0, verbose=False
    )
    try:
        hits = 0
        for question, expected in probes:
            reply = llm.create_chat_completion(
                messages=[{"role": "user", "content": question}],
                temperature=0.0,
                max_tokens=48,
                repeat_penalty=1.1,
            )
            hits += expected.lower() in (reply["choices"][0]["message"]["content"] or "").lower()
        return hits / len(probes)
    finally:
        llm.close()


def run_one(settings: Any, data: Path, config: dict[str, Any], method: str) -> dict[str, Any]:
    from localllm.finetune import jobs

    started = time.perf_counter()
    run_id, _ = jobs.create_run(settings, data, method=method, bf16="off", samples=1, **config)
    jobs.start(settings, run_id)
    info = jobs.wait(settings, run_id, poll_s=1.0)
    if info.state != "done":
        raise RuntimeError(f"{run_id}: {info.state}: {info.error}")
    general = jobs.samples(settings, run_id, "general")
    knew = [g for g in general if g["base_knew"]]
    return {
        "run": run_id,
        "seconds": round(time.perf_counter() - started, 1),
        "eval_loss_before": info.eval_loss_before,
        "eval_loss_after": info.eval_loss_after,
        "general_ppl_before": info.general_perplexity_before,
        "general_ppl_after": info.general_perplexity_after,
        "general_kept": f"{sum(g['tuned_knows'] for g in knew)}/{len(knew)}",
        "warnings": info.warnings,
        "adapter": info.adapter_gguf,
        "general_answers": [g["tuned"][:80] for g in general],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--method", default="lora")
    parser.add_argument("--out", default="finetune_defaults")
    parser.add_argument("--append", action="store_true", help="add to the rows already written")
    args = parser.parse_args()

    from localllm.config import Settings
    from localllm.llm.catalog import bundled_model_path

    base = bundled_model_path()
    work = Path(tempfile.mkdtemp(prefix="ft-defaults-"))
    settings = Settings(runs_dir=ROOT / "runs", models_dir=work / "models")
    previous = ROOT / "bench" / "results" / f"{args.out}.json"
    rows = json.loads(previous.read_text())["rows"] if args.append and previous.is_file() else []
    for name in args.datasets.split(","):
        examples, probes = DATASETS[name]()
        data = work / f"{name}.jsonl"
        data.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
        for key in args.configs.split(","):
            config = CONFIGS[key]
            print(f"{name} {key} {config}", file=sys.stderr, flush=True)
            row = {"dataset": name, "examples": len(examples), "config": key, **config}
            row.update(run_one(settings, data, config, args.method))
            row["unseen_correct"] = probe(base, Path(row["adapter"]), probes)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
            write(rows, args)


def write(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    lines = [
        f"Fine-tune defaults ({args.method}, bf16 off, bundled SmolLM2-135M; `bench/finetune_defaults.py`):",
        "",
        "| data | cfg | lr | rank | targets | steps | rehearsal | val loss | unseen right | general ppl | general kept | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        targets = "all linear" if len(r["target_modules"]) > 4 else "attention"
        steps = r["max_steps"] or f"{r.get('epochs')} ep"
        unseen = "-" if r["unseen_correct"] is None else f"{r['unseen_correct']:.2f}"
        lines.append(
            f"| {r['dataset']} ({r['examples']}) | {r['config']} | {r['learning_rate']:g} | {r['rank']} | "
            f"{targets} | {steps} | {r.get('rehearsal', 0)} | {r['eval_loss_before']:.2f} -> {r['eval_loss_after']:.2f} | {unseen} | "
            f"{r['general_ppl_before']:.1f} -> {r['general_ppl_after']:.1f} | {r['general_kept']} | {r['seconds']:.0f} |"
        )
    write_results(args.out, {"machine": machine(), "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
