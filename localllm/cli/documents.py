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
