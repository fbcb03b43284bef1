"""Documents tab: drop files or a folder, watch them being indexed, list and delete documents."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from localllm.documents.parse import SUPPORTED_EXTENSIONS
from localllm.errors import LocalLLMError
from localllm.index.jobs import IngestJob
from localllm.index.store import DEFAULT_COLLECTION
from localllm.index.uploads import keep_uploads
from localllm.services import Services
from localllm.ui.confirm import confirm_delete
from localllm.ui.documents_adapt import build_adapt_section

DOC_COLUMNS = ["Name", "Pages", "Chunks", "Collection", "Added", "Status", "Warnings"]
RESULT_COLUMNS = ["File", "Status", "Pages", "Chunks", "Time (s)", "Warnings / error"]


def _collections(services: Services) -> list[str]:
    names = [c.name for c in services.store.collections()]
    return names if DEFAULT_COLLECTION in names else [DEFAULT_COLLECTION, *names]


def _doc_rows(services: Services, collection: str | None = None) -> list[list[Any]]:
    rows = []
    for d in services.store.documents(collection):
        info = d.to_dict()
        rows.append(
            [
                d.name,
                d.pages,
                d.chunks,
                d.collection,
                info["added"],
                d.status,
                "; ".join(d.warnings),
            ]
        )
    return rows


def _scrub_note(services: Services, collection: str) -> str:
    info = services.store.catalog.collection(collection)
    if info is not None and info.scrub_pii:
        return "**PII redaction is ON** for this collection: e-mails, phone, IBAN, card and national id numbers are replaced before anything is stored."
    return "PII redaction is off for this collection."


def build_documents_tab(services: Services, demo: gr.Blocks) -> None:
    job_id = gr.State("")
    with gr.Row():
        with gr.Column(scale=2):
            files = gr.File(
                label="Drop files here",
                file_count="multiple",
                file_types=sorted(SUPPORTED_EXTENSIONS),
                elem_id="upload-files",
            )
            folder = gr.File(
                label="...or a folder", file_count="directory", elem_id="upload-folder"
            )
        with gr.Column(scale=1):
            collection = gr.Dropdown(
                label="Collection",
                choices=[DEFAULT_COLLECTION],
                value=DEFAULT_COLLECTION,
                allow_custom_value=True,
                elem_id="collection",
                info="Where the files go; each collection is searched on its own.",
            )
            with gr.Row():
                new_name = gr.Textbox(
                    label="New collection", placeholder="a name", scale=3, elem_id="new-collection"
                )
                create = gr.Button("Create", size="sm", scale=1, elem_id="create-collection")
            scrub = gr.Checkbox(label="Redact PII in this collection", value=False, elem_id="scrub")
            scrub_note = gr.Markdown()
            with gr.Row():
                index = gr.Button("Index", variant="primary", elem_id="index")
                cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-index")
    status = gr.Markdown(elem_id="ingest-status")
    results = gr.Dataframe(
        headers=RESULT_COLUMNS, interactive=False, wrap=True, elem_id="ingest-results"
    )
    gr.Markdown("### Indexed documents")
    documents = gr.Dataframe(headers=DOC_COLUMNS, interactive=False, wrap=True, elem_id="documents")
    with gr.Row():
        to_delete = gr.Dropdown(label="Document", choices=[], scale=3, elem_id="document-to-delete")
        delete = confirm_delete("Delete document", "delete-document", scale=1)
        drop = confirm_delete("Delete collection", "delete-collection", scale=1)
    build_adapt_section(services, demo, collection)

    def listing(selected: str) -> tuple[Any, ...]:
        names = _collections(services)
        docs = services.store.documents(selected)
        return (
            gr.update(choices=names),
            _doc_rows(services),
            gr.update(choices=[d.name for d in docs], value=None),
            _scrub_note(services, selected),
        )

    def run(
        uploaded: list[str] | None,
        uploaded_folder: list[str] | None,
        target: str,
        redact: bool,
        bar: gr.Progress = gr.Progress(),
    ) -> Iterator[tuple[Any, ...]]:
        sources = [Path(p) for p in (uploaded or []) + (uploaded_folder or [])]
        if not sources:
            raise gr.Error("Drop some files or a folder first.")
        target = (target or DEFAULT_COLLECTION).strip()
        try:
            kept = keep_uploads(services.store.folder / "uploads", sources)
            job = IngestJob(services.ingestor(), kept, target, redact or None).start()
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        services.jobs[job.id] = job
        try:
            while not job.done:
                p = job.progress
                line = (
                    f"Indexing file {p.file_index + 1} of {p.file_count}: **{p.name}** — {p.stage} "
                    f"{p.fraction:.0%} · total {p.overall:.0%}"
                    if p
                    else "Starting…"
                )
                bar(p.overall if p else 0.0, desc="Indexing")
                yield job.id, line, gr.skip(), *(gr.skip(),) * 4
                time.sleep(0.25)
        finally:
            services.jobs.pop(job.id, None)
        if job.error is not None:
            raise gr.Error(f"Indexing stopped: {job.error}")
        report = job.report
        assert report is not None
        rows = [
            [
                r.name,
                r.status,
                r.pages,
                r.chunks,
                round(r.seconds, 1),
                r.error or "; ".join(r.warnings),
            ]
            for r in report.results
        ]
        counts = report.to_dict()["counts"]
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())  # type: ignore[union-attr]
        verdict = "Cancelled" if job.cancelled else "Done"
        yield "", f"{verdict}: {summary}.", rows, *listing(target)

    def stop(current: str) -> str:
        job = services.jobs.get(current)
        if job is None:
            return "Nothing is being indexed."
        job.cancel()
        return "Cancelling after the current step…"

    def document_to_delete(target: str, name: str | None) -> str:
        if not name:
            raise gr.Error("Pick a document to delete.")
        return f"{name} from {target}"

    def collection_to_delete(target: str) -> str:
        count = len(services.store.documents(target))
        return f"collection {target} and its {count} document{'' if count == 1 else 's'}"

    def remove(target: str, name: str | None) -> tuple[Any, ...]:
        if not name:
            raise gr.Error("Pick a document to delete.")
        try:
            services.store.delete_document(target, name)
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        return f"Deleted **{name}** from {target}.", *listing(target)

    def remove_collection(target: str) -> tuple[Any, ...]:
        try:
            services.store.delete_collection(target)
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        return f"Deleted collection **{target}** and its documents.", *listing(DEFAULT_COLLECTION)

    def add_collection(name: str) -> tuple[Any, ...]:
        try:
            made = services.store.ensure_collection(name or "")
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        shown = listing(made.name)
        return (
            f"Collection **{made.name}** is ready: drop files and press Index.",
            gr.update(choices=_collections(services), value=made.name),
            *shown[1:],
            "",
        )

    outputs = [collection, documents, to_delete, scrub_note]
    create.click(
        add_collection, new_name, [status, *outputs, new_name], api_name="create_collection"
    )
    index.click(
        run,
        [files, folder, collection, scrub],
        [job_id, status, results, *outputs],
        api_name="ingest",
        concurrency_limit=1,
        concurrency_id="ingest",
        show_progress_on=[status],  # one progress bar, not one over every output
    )
    cancel.click(stop, job_id, status, api_name="cancel_ingest")
    delete.wire(
        document_to_delete,
        remove,
        [collection, to_delete],
        [status, *outputs],
        api_name="delete_document",
        disarm_on=[collection, to_delete],
    )
    drop.wire(
        collection_to_delete,
        remove_collection,
        [collection],
        [status, *outputs],
        api_name="delete_collection",
        disarm_on=[collection],
    )
    collection.change(listing, collection, outputs, api_name=False)
    demo.load(listing, collection, outputs, api_name=False)
