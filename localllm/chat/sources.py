"""A grounded answer's source, shown: the page it starts on with its passage highlighted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from localllm.index.pages import printed_label, render_page
from localllm.index.store import DocumentStore, StoreError
from localllm.rag.prompt import Source


@dataclass
class SourcePage:
    image: object  # a PIL image
    page: int  # the page's place in the file, 1-based
    printed: str | None  # the number printed on it, where that differs ("38" for page 46)

    @property
    def label(self) -> str:
        return f"Page {self.page}" + (f" (printed page {self.printed})" if self.printed else "")


def source_page(
    store: DocumentStore, collection: str, source: Source, width: int = 900
) -> SourcePage:
    """The page of a source, rendered with its passage highlighted (a PIL image): where the answer
    is supported (its spans' lines) when attribution found it, else the page it starts on.

    Raises StoreError when the document is gone, PageRenderError when its file can't be drawn.
    """
    records = store.find(collection, doc_id=source.doc_id) if source.doc_id else []
    if not records:
        raise StoreError(f"{source.file} is no longer in collection {collection!r}")
    path = Path(records[0].source)
    if source.page is None or path.suffix.lower() != ".pdf":
        raise StoreError(f"{source.file} has no pages to show; the passage is its text")
    shown = source.span_boxes()
    page = next((p for p, _ in shown), source.page) if source.spans else source.page
    boxes = [box for p, box in shown if p == page]
    return SourcePage(render_page(path, page, boxes, width=width), page, printed_label(path, page))
