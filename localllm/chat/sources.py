"""A grounded answer's source, shown: the page it starts on with its passage highlighted."""

from __future__ import annotations

from pathlib import Path

from localllm.index.pages import render_page
from localllm.index.store import DocumentStore, StoreError
from localllm.rag.prompt import Source


def source_page(store: DocumentStore, collection: str, source: Source, width: int = 900) -> object:
    """The page a source starts on, rendered with the source's passage highlighted (a PIL image).

    Raises StoreError when the document is gone, PageRenderError when its file can't be drawn.
    """
    records = store.find(collection, doc_id=source.doc_id) if source.doc_id else []
    if not records:
        raise StoreError(f"{source.file} is no longer in collection {collection!r}")
    path = Path(records[0].source)
    if source.page is None or path.suffix.lower() != ".pdf":
        raise StoreError(f"{source.file} has no pages to show; the passage is its text")
    boxes = [box for page, box in source.boxes if page == source.page]
    return render_page(path, source.page, boxes, width=width)
