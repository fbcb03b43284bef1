"""Embedder adaptation on the Debian FAQ: hit@k before and after, on held-out generated questions
and on the FAQ dev set (bench/eval/faq_qa.jsonl, the FAQ authors' own questions, never trained on).

1. The FAQ ingested with default settings into a fresh store.
2. The dev set scored with vector search and the default hybrid search (the bundled embedder).
3. `localllm.adapt_embedder.run`: questions written from spread passages (the bundled SmolLM2 by
   default, or --questions sentences), 20 % of the passages held out, MNRL training in its own
   process, ONNX rebuilt, the collection re-embedded beside itself, held-out hit@k before/after.
4. The adapted embedder kept whatever it scored (to measure it), and the dev set scored again.
Writes bench/results/embedder_adapt.json and the embedder_adapt table in bench/README.md.

    python bench/embedder_adapt.py [--steps N] [--learning-rate F] [--base-share F] (the app's
        defaults) [--passages 100] [--questions model] [--results embedder_adapt]
        [--questions-file bench/results/embedder_adapt_questions.jsonl]

The questions written are saved to bench/results/embedder_adapt_questions.jsonl; --questions-file
trains on saved ones instead of writing them again (the chat model's part of the time).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_results

BENCH = Path(__file__).resolve().parent
CORPUS = BENCH.parents[1] / "shared" / "corpus"
FAQ = "debian-faq.en.pdf"
DEV_SET = BENCH / "eval" / "faq_qa.jsonl"
QUESTIONS = BENCH / "results" / "embedder_adapt_questions.jsonl"
STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def dev_scores(services: Any, collection: str) -> dict[str, dict[str, float]]:
    from localllm.eval.metrics import load_qa
    from localllm.eval.runs import evaluate_retrieval

    items = load_qa(DEV_SET)
    out = {}
    for mode in ("vector", "hybrid"):
        scores = evaluate_retrieval(
            services.retriever(), items, collection, k=10, mode=mode, rerank=False
        )
        out[mode] = {k: round(v, 4) for k, v in scores.to_dict().items() if k != "questions"}
        out[mode]["questions"] = scores.questions
    return out


def table(payload: dict[str, Any]) -> str:
    run = payload["adaptation"]
    lines = [
        "### Embedder adaptation (bench/embedder_adapt.py)",
        "",
        f"Debian FAQ, {payload['chunks']} chunks; questions written by {run['generator']} from "
        f"{payload['passages']} passages: {run['pairs']['train']} trained on, "
        f"{run['pairs']['held_out']} held out; {run['steps']} steps of batch {payload['batch_size']}, "
        f"learning rate {payload['learning_rate']:g}, base share {payload.get('base_share', 0):g} "
        "(WiSE-FT: that share of the weights moved back to the bundled model's); "
        f"{payload['cpus']} cores. Vector search unless marked hybrid.",
        "",
        "| questions | embedder | hit@1 | hit@5 | hit@10 | MRR |",
        "|---|---|---|---|---|---|",
    ]
    rows = [
        ("held-out generated", "bundled", run["before"]),
        ("held-out generated", "adapted", run["after"]),
        ("FAQ dev set", "bundled", payload["dev_before"]["vector"]),
        ("FAQ dev set", "adapted", payload["dev_after"]["vector"]),
        ("FAQ dev set, hybrid", "bundled", payload["dev_before"]["hybrid"]),
        ("FAQ dev set, hybrid", "adapted", payload["dev_after"]["hybrid"]),
    ]
    for label, embedder, s in rows:
        lines.append(
            f"| {label} | {embedder} | {s['hit1']:.3f} | {s['hit5']:.3f} | {s['hit10']:.3f} | "
            f"{s['mrr']:.3f} |"
        )
    secs = run["seconds"]
    lines += [
        "",
        "Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()) + f"; whole run "
        f"{payload['seconds']:.0f}. Default choice (keep unless held-out hit@1 is worse): "
        f"{'keep' if run['better'] else 'discard'}.",
    ]
    return "\n".join(lines)


def main() -> None:
    from localllm.index.adapt import AdaptOptions, adapt

    app = AdaptOptions()  # the app's defaults
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=app.steps)
    parser.add_argument("--batch-size", type=int, default=app.batch_size)
    parser.add_argument("--learning-rate", type=float, default=app.learning_rate)
    parser.add_argument("--base-share", type=float, default=app.base_share)
    parser.add_argument("--passages", type=int, default=100)
    parser.add_argument("--questions", choices=("model", "sentences"), default="model")
    parser.add_argument("--questions-file", type=Path)
    parser.add_argument("--results", default="embedder_adapt", help="results/NAME.json")
    args = parser.parse_args()

    from localllm.adapt_embedder import decide, generator_for
    from localllm.config import Settings
    from localllm.index.adapt_pairs import read_questions, write_questions
    from localllm.privacy import apply_privacy
    from localllm.services import Services

    with tempfile.TemporaryDirectory(prefix="embedder-adapt-") as tmp:
        root = Path(tmp)
        settings = Settings(
            docs_store=root / "docs_store",
            runs_dir=root / "runs",
            models_dir=root / "models",
            conversations_path=root / "conversations.sqlite3",
            cache_dir=root / "cache",
        )
        apply_privacy(settings)
        services = Services(settings)
        try:
            report = services.ingestor().ingest([CORPUS / FAQ], "faq")
            assert not report.failed, report.to_dict()
            chunks = services.store.count_chunks("faq")
            say(f"ingested the FAQ: {chunks} chunks")
            dev_before = dev_scores(services, "faq")
            say(f"dev set before: {dev_before}")
            last: list[str] = []

            def progress(stage: str, done: int, total: int) -> None:
                if last[-1:] != [stage] or done == total:
                    last.append(stage)
                    say(f"{stage} {done}/{total}")

            written: list[Any] = []

            def generate(*call: Any) -> list[Any]:
                if args.questions_file:
                    written.extend(read_questions(args.questions_file))
                else:
                    written.extend(generator_for(services, args.questions)(*call))
                return written

            record = adapt(
                services.store,
                services.embedder,
                "faq",
                generate,
                generator=f"{args.questions} (saved)" if args.questions_file else args.questions,
                options=AdaptOptions(
                    steps=args.steps,
                    batch_size=args.batch_size,
                    learning_rate=args.learning_rate,
                    base_share=args.base_share,
                    max_passages=args.passages,
                ),
                progress=progress,
            )
            if not args.questions_file:
                write_questions(written, QUESTIONS)
            say(f"held-out before {record.before['hit1']:.3f} after {record.after['hit1']:.3f}")
            adaptation = record.to_dict()
            decide(services, "faq", "keep")
            dev_after = dev_scores(services, "faq")
            say(f"dev set after: {dev_after}")
        finally:
            services.close()
    payload = {
        **machine(),
        "chunks": chunks,
        "passages": args.passages,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "base_share": args.base_share,
        "adaptation": adaptation,
        "dev_before": dev_before,
        "dev_after": dev_after,
        "seconds": round(time.perf_counter() - STARTED, 1),
    }
    out = write_results(args.results, payload, table(payload))
    print(table(payload))
    say(f"wrote {out}")


if __name__ == "__main__":
    main()
