"""`localllm`: the command line face of the same core the UI uses."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from localllm.cli_auth import add_commands as add_auth_commands
from localllm.cli_finetune import add_commands as add_finetune_commands
from localllm.cli_rag import add_commands
from localllm.config import Settings
from localllm.errors import LocalLLMError
from localllm.format import human_count, human_size

if TYPE_CHECKING:
    from localllm.index.ingest import IngestProgress
from localllm.privacy import apply_privacy


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.llm.catalog import list_models

    models = list_models(settings)
    if args.json:
        _print_json(
            {"models_dir": str(settings.models_dir), "models": [m.to_dict() for m in models]}
        )
        return 0
    for m in models:
        if not m.ok:
            print(f"{m.name}  BROKEN: {m.error}")
            continue
        params = human_count(m.parameters)
        extra = f"adapter for {m.base}" if m.kind == "adapter" else f"ctx {m.context_length}"
        tmpl = "" if m.kind == "adapter" or m.has_chat_template else ", no chat template"
        tag = " (bundled)" if m.bundled else ""
        print(
            f"{m.name}{tag}  {m.architecture} {params} {m.quantization}, {extra}{tmpl}, "
            f"{human_size(m.size_bytes)}"
        )
    return 0


def cmd_chat(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.llm.conversation import with_system
    from localllm.llm.manager import ModelManager, params_from_settings

    manager = ModelManager(settings)
    try:
        model = manager.get(args.model)
        messages = with_system(
            [{"role": "user", "content": args.message}],
            settings.system_prompt if args.system is None else args.system,
        )
        params = params_from_settings(
            settings,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            seed=args.seed,
            stop=tuple(args.stop) or None,
        )
        pieces: list[str] = []
        for piece in model.stream_chat(messages, params):
            pieces.append(piece)
            if not args.json:
                sys.stdout.write(piece)
                sys.stdout.flush()
        stats = model.last_stats
        if args.json:
            _print_json(
                {
                    "model": model.name,
                    "answer": "".join(pieces),
                    "prompt_tokens": stats.prompt_tokens,
                    "completion_tokens": stats.completion_tokens,
                    "seconds": round(stats.seconds_total, 3),
                }
            )
        else:
            sys.stdout.write("\n")
        return 0
    finally:
        manager.close()


def cmd_download(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.llm.download import download_gguf

    info = download_gguf(settings, args.repo, args.filename, revision=args.revision)
    if args.json:
        _print_json({"downloaded": info.to_dict()})
    else:
        print(f"downloaded {info.name} ({human_size(info.size_bytes)}) to {settings.models_dir}")
    return 0


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
        _print_json(report.to_dict())
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
                _print_json({"removed_collection": args.name})
            else:
                print(f"removed collection {args.name} and its documents")
            return 0
        if args.docs_command == "rm":
            collection = args.collection or DEFAULT_COLLECTION
            removed = store.delete_document(collection, args.name)
            if args.json:
                _print_json({"removed": [r.to_dict() for r in removed]})
            else:
                print(f"removed {args.name} from {collection}")
            return 0
        collection = args.collection  # None: every collection
        if collection is not None:
            store.collection(collection)  # a clear error for an unknown collection
        docs = store.documents(collection)
        if args.json:
            _print_json({"documents": [d.to_dict() for d in docs]})
        else:
            for d in docs:
                warn = f"  ({len(d.warnings)} warnings)" if d.warnings else ""
                print(f"{d.collection}  {d.name}  {d.pages} pages, {d.chunks} chunks{warn}")
        return 0
    finally:
        services.close()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.ui.app import launch

    launch(settings, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localllm", description="Private, offline chat with GGUF models in llama.cpp."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list the models in the models folder")
    models.add_argument("--json", action="store_true", help="one JSON object on stdout")
    models.set_defaults(func=cmd_models)

    chat = sub.add_parser("chat", help="a one-shot answer from a local model")
    chat.add_argument("message")
    chat.add_argument("--model", help="a file name from `localllm models`, or 'bundled'")
    chat.add_argument("--system", help="system prompt (default from settings)")
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--seed", type=int)
    chat.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    chat.add_argument("--json", action="store_true", help="one JSON object on stdout")
    chat.set_defaults(func=cmd_chat)

    download = sub.add_parser(
        "download",
        help="fetch a GGUF from the Hugging Face Hub (needs LOCALLLM_ALLOW_DOWNLOADS=1)",
    )
    download.add_argument("repo", help="Hub repository id, e.g. owner/name")
    download.add_argument("filename", help="a .gguf file at the top of that repository")
    download.add_argument("--revision")
    download.add_argument("--json", action="store_true", help="one JSON object on stdout")
    download.set_defaults(func=cmd_download)

    ingest = sub.add_parser(
        "ingest", help="index files and folders (recursively) for grounded chat"
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--collection", default="default")
    ingest.add_argument("--scrub-pii", action="store_true", help="redact PII in this collection")
    ingest.add_argument("--quiet", action="store_true", help="no per-file progress on stderr")
    ingest.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ingest.set_defaults(func=cmd_ingest)

    docs = sub.add_parser("docs", help="list indexed documents; `docs rm NAME` deletes one")
    docs.add_argument("--collection", default=None)
    docs.add_argument("--json", action="store_true", help="one JSON object on stdout")
    # The same options after a subcommand; SUPPRESS keeps a subcommand from resetting them.
    docs_options = argparse.ArgumentParser(add_help=False)
    docs_options.add_argument("--collection", default=argparse.SUPPRESS)
    docs_options.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    docs_sub = docs.add_subparsers(dest="docs_command")
    docs_rm = docs_sub.add_parser(
        "rm", parents=[docs_options], help="delete a document from a collection"
    )
    docs_rm.add_argument("name")
    docs_drop = docs_sub.add_parser(
        "rm-collection", parents=[docs_options], help="delete a collection and its documents"
    )
    docs_drop.add_argument("name")
    docs.set_defaults(func=cmd_docs)

    add_commands(sub)
    add_auth_commands(sub)
    add_finetune_commands(sub)

    serve = sub.add_parser("serve", help="start the app (web UI)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValueError as e:
        print(f"error: bad settings: {e}", file=sys.stderr)
        return 2
    apply_privacy(settings)
    try:
        return int(args.func(settings, args))
    except LocalLLMError as e:
        if getattr(args, "json", False):
            _print_json({"error": str(e)})
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
