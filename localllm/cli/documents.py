"""`localllm ingest | docs`: indexing files, and the documents of each collection."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from localllm.cli.output import print_json
from localllm.config import Settings

if TYPE_CHECKING:
    from localllm.index.ingest import IngestProgress


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from localllm.services import Services

    services = Services(settings)
    try:
        last_name: list[str] = []

        def show(progress: IngestProgress) -> None:
            if progress.stage == "parse" and last_name[-1:] != [progress.name]:
                last_name.append(progress.name)
                print(
                    f"[{progress.file_index + 1}/{progress.file_count}] {progress.name}",
                    file=sys.stderr,
                    flush=True,
                )

        report = services.ingestor().ingest(
            [Path(p) for p in args.paths],
            args.collection,
            scrub_pii=True if args.scrub_pii else None,
            progress=None if args.quiet else show,
        )
    finally:
        services.close()
    if args.json:
        print_json(report.to_dict())
    else:
        for r in report.results:
            if r.status == "failed":
                continue
            detail = f"{r.pages} pages, {r.chunks} chunks" if r.status != "skipped" else r.error
            print(f"{r.status:9} {r.name}  ({detail})")
            for warning in r.warnings:
                print(f"          warning: {warning}")
    for r in report.failed:
        print(f"failed: {r.error}", file=sys.stderr)
    return 1 if report.failed else 0


def cmd_docs(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.index.store import DEFAULT_COLLECTION
    from localllm.services import Services

    services = Services(settings)
    try:
        store = services.store
        if args.docs_command == "rm-collection":
            store.delete_collection(args.name)
            if args.json:
                print_json({"removed_collection": args.name})
            else:
                print(f"removed collection {args.name} and its documents")
            return 0
        if args.docs_command == "rm":
            collection = args.collection or DEFAULT_COLLECTION
            removed = store.delete_document(collection, args.name)
            if args.json:
                print_json({"removed": [r.to_dict() for r in removed]})
            else:
                print(f"removed {args.name} from {collection}")
            return 0
        collection = args.collection  # None: every collection
        if collection is not None:
            store.collection(collection)  # a clear error for an unknown collection
        docs = store.documents(collection)
        if args.json:
            print_json({"documents": [d.to_dict() for d in docs]})
        else:
            for d in docs:
                warn = f"  ({len(d.warnings)} warnings)" if d.warnings else ""
                print(f"{d.collection}  {d.name}  {d.pages} pages, {d.chunks} chunks{warn}")
        return 0
    finally:
        services.close()


def _scores_table(before: dict[str, float], after: dict[str, float]) -> list[str]:
    lines = [f"{'':8}{'hit@1':>8}{'hit@5':>8}{'hit@10':>8}{'MRR':>8}"]
    for label, scores in (("before", before), ("after", after)):
        if scores:
            values = "".join(
                f"{scores.get(k, 0.0):>8.3f}" for k in ("hit1", "hit5", "hit10", "mrr")
            )
            lines.append(f"{label:8}{values}")
    return lines


def _verdict(record: dict[str, object], collection: str) -> str:
    state = record["state"]
    if state == "kept":
        return f"kept: {collection} now searches with {record['embedder']}"
    if state == "discarded":
        return f"discarded: {collection} keeps its embedder"
    return (
        f"waiting: `localllm embedder keep --collection {collection}` switches to it, "
        f"`localllm embedder discard --collection {collection}` drops it"
    )


def _print_adaptation(record: dict[str, object], collection: str) -> None:
    pairs = record.get("pairs") or {}
    assert isinstance(pairs, dict)
    print(
        f"{collection}: {pairs.get('train', 0)} training questions, {pairs.get('held_out', 0)} "
        f"held out (written by: {record['generator']}), {record['steps']} steps"
    )
    before, after = record.get("before") or {}, record.get("after") or {}
    assert isinstance(before, dict) and isinstance(after, dict)
    for line in _scores_table(before, after):
        print(line)
    print(_verdict(record, collection))


def cmd_adapt_embedder(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.adapt_embedder import decide, progress_line, run
    from localllm.index.adapt import AdaptOptions
    from localllm.services import Services

    options = AdaptOptions(
        steps=args.steps,
        batch_size=args.batch_size,
        held_out=args.held_out,
        max_passages=args.max_passages,
        base_share=args.base_share,
    )
    shown: list[str] = []

    def show(stage: str, done: int, total: int) -> None:
        line = progress_line(stage, done, total)
        if not args.quiet and shown[-1:] != [line]:
            shown.append(line)
            print(line, file=sys.stderr, flush=True)

    services = Services(settings)
    try:
        run(services, args.collection, questions=args.questions, options=options, progress=show)
        record = decide(services, args.collection, args.then).to_dict()
    finally:
        services.close()
    if args.json:
        print_json(record)
    else:
        _print_adaptation(record, args.collection)
    return 0


def cmd_embedder(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.adapt_embedder import decide, waiting
    from localllm.services import Services

    services = Services(settings)
    try:
        if args.embedder_command in ("keep", "discard"):
            record = decide(services, args.collection, args.embedder_command).to_dict()
            if args.json:
                print_json(record)
            else:
                print(_verdict(record, args.collection))
            return 0
        info = services.store.collection(args.collection)
        model = info.embedder
        shown = {
            "collection": info.name,
            "embedder": model or str(services.embedder.model_path),
            "adapted": model is not None,
            "pending": None,
        }
        record = waiting(services, args.collection)
        if record is not None:
            shown["pending"] = record.to_dict()
    finally:
        services.close()
    if args.json:
        print_json(shown)
    else:
        print(f"{shown['collection']}: searches with {shown['embedder']}")
        if record is not None:
            print("an adapted embedder is waiting:")
            _print_adaptation(record.to_dict(), args.collection)
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    adapt = sub.add_parser(
        "adapt-embedder",
        help="train the embedder on questions about a collection; show hit@k before and after",
    )
    adapt.add_argument("--collection", default="default")
    adapt.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    adapt.add_argument("--batch-size", type=int, default=16, help="pairs per step (default 16)")
    adapt.add_argument(
        "--questions",
        choices=("model", "sentences"),
        default="model",
        help="who writes the questions: the chat model (default), or the passages' own sentences",
    )
    adapt.add_argument(
        "--max-passages", type=int, default=200, help="passages to ask about (default 200)"
    )
    adapt.add_argument(
        "--held-out", type=float, default=0.2, help="share of passages kept for measuring"
    )
    adapt.add_argument(
        "--base-share",
        type=float,
        default=0.5,
        help="how far the tuned weights go back to the bundled embedder's (WiSE-FT; 0: none)",
    )
    then = adapt.add_mutually_exclusive_group()
    then.add_argument(
        "--keep", dest="then", action="store_const", const="keep", help="keep it whatever it scores"
    )
    then.add_argument(
        "--discard", dest="then", action="store_const", const="discard", help="only measure"
    )
    then.add_argument(
        "--later",
        dest="then",
        action="store_const",
        const="later",
        help="leave it waiting for `localllm embedder keep|discard`",
    )
    adapt.set_defaults(then="auto")
    adapt.add_argument("--quiet", action="store_true", help="no progress on stderr")
    adapt.add_argument("--json", action="store_true", help="one JSON object on stdout")
    adapt.set_defaults(func=cmd_adapt_embedder)

    embedder = sub.add_parser(
        "embedder", help="which embedder a collection uses; keep or discard an adapted one"
    )
    embedder.add_argument(
        "embedder_command", choices=("show", "keep", "discard"), nargs="?", default="show"
    )
    embedder.add_argument("--collection", default="default")
    embedder.add_argument("--json", action="store_true", help="one JSON object on stdout")
    embedder.set_defaults(func=cmd_embedder)
