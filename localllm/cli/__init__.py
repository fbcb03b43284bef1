"""`localllm`: the command line face of the same core the UI uses. One module per command group."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from localllm.cli.auth import add_commands as add_auth_commands
from localllm.cli.documents import add_commands as add_documents_commands
from localllm.cli.documents import cmd_docs, cmd_ingest
from localllm.cli.finetune import add_commands as add_finetune_commands
from localllm.cli.grounded import add_commands as add_grounded_commands
from localllm.cli.models import cmd_chat, cmd_download, cmd_models
from localllm.cli.output import print_json
from localllm.config import Settings
from localllm.errors import LocalLLMError
from localllm.privacy import apply_privacy


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from localllm.server.launch import launch

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

    add_documents_commands(sub)
    add_grounded_commands(sub)
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
            print_json({"error": str(e)})
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
