"""A grounded answer's source, shown: its page, with the lines that support the answer highlighted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pypdfium2 as pdfium

from localllm.documents.layout import Line, page_lines, rotate_box
from localllm.documents.model import BBox, DocumentError
from localllm.documents.pdf import PDFIUM, open_pdf
from localllm.index.pages import printed_label, render_page
from localllm.index.store import DocumentStore, StoreError
from localllm.rag.prompt import Source

Span = tuple[int, int]


@dataclass
class SourcePage:
    image: object  # a PIL image
    page: int  # the page's place in the file, 1-based
    printed: str | None  # the number printed on it, where that differs ("38" for page 46)
    boxes: list[BBox] = field(default_factory=list)  # highlighted, in points from the top-left

    @property
    def label(self) -> str:
        return f"Page {self.page}" + (f" (printed page {self.printed})" if self.printed else "")


def pages_text(source: Source) -> str:
    """Where a source is, as its label shows it: "p. 46", with the number printed on the page
    where the PDF's labels say it differs ("p. 46 (printed 38)", "pp. 46-47 (printed 38-39)")."""
    if not source.pages:
        return ""
    first, last = source.pages[0], source.pages[-1]
    printed = source.printed
    if first == last:
        return f"p. {first}" + (f" (printed {printed[first]})" if first in printed else "")
    shown = f"pp. {first}-{last}"
    if first in printed or last in printed:
        shown += f" (printed {printed.get(first, first)}-{printed.get(last, last)})"
    return shown


def source_page(
    store: DocumentStore,
    collection: str,
    source: Source,
    spans: Sequence[Span] | None = None,
    width: int = 900,
) -> SourcePage:
    """The page of a source, rendered with its passage highlighted (a PIL image): where the answer
    is supported (the lines of `spans`, by default all the source's spans) when attribution found
    it, else the page it starts on.

    Raises StoreError when the document is gone, PageRenderError when its file can't be drawn.
    """
    records = store.find(collection, doc_id=source.doc_id) if source.doc_id else []
    if not records:
        raise StoreError(f"{source.file} is no longer in collection {collection!r}")
    path = Path(records[0].source)
    if source.page is None or path.suffix.lower() != ".pdf":
        raise StoreError(f"{source.file} has no pages to show; the passage is its text")
    page, boxes = highlighted(path, source, source.spans if spans is None else spans)
    image = render_page(path, page, boxes, width=width)
    return SourcePage(image, page, printed_label(path, page), boxes)


def highlighted(path: Path, source: Source, spans: Sequence[Span]) -> tuple[int, list[BBox]]:
    """The page to show for `spans` of a source and the boxes to highlight on it: the lines each
    span's text is on, found in the page's text layer; else the boxes of the source's elements
    that hold a span; with no spans, its first page and all its boxes there."""
    found = span_lines(path, source, spans) if spans else None
    if found:
        return found
    shown = replace(source, spans=list(spans)).span_boxes()
    start = source.page or 1
    page = next((p for p, _ in shown), start) if spans else start
    return page, [box for p, box in shown if p == page]


def span_lines(path: Path, source: Source, spans: Sequence[Span]) -> tuple[int, list[BBox]] | None:
    """The page the first span found is on, with the boxes of the lines that hold the spans found
    there; None when no span's text is on the source's pages (a scan, a scrubbed collection)."""
    wanted = [squash(source.text[a:b]) for a, b in spans]
    by_page: dict[int, list[BBox]] = {}
    first: int | None = None
    with PDFIUM:
        try:
            pdf = open_pdf(path, path.name)
        except DocumentError:
            return None
        try:
            for page in source.pages:
                lines = _lines(pdf, page)
                near = [box for p, box in source.boxes if p == page]
                for i, text in enumerate(wanted):
                    boxes = _find(text, lines, near) if text else None
                    if boxes is not None:
                        by_page.setdefault(page, []).extend(boxes)
                        first = page if first is None else first
                        wanted[i] = ""  # found: not looked for on a later page
        except pdfium.PdfiumError:
            return None
        finally:
            pdf.close()
    return None if first is None else (first, list(dict.fromkeys(by_page[first])))


def squash(text: str) -> str:
    return " ".join(text.split())


def _lines(pdf: pdfium.PdfDocument, number: int) -> list[tuple[str, BBox]]:
    """The text lines of page `number` (1-based), each with its box on the page as shown."""
    if not 1 <= number <= len(pdf):
        return []
    page = pdf[number - 1]
    try:
        left, bottom, right, top = page.get_bbox()
        textpage = page.get_textpage()
        try:
            lines: list[Line] = page_lines(textpage, left, top)
        finally:
            textpage.close()
        rotation = page.get_rotation()
    finally:
        page.close()
    return [
        (
            squash(line.text),
            rotate_box(
                (line.x0, line.top, line.x1, line.bottom), rotation, right - left, top - bottom
            ),
        )
        for line in lines
    ]


def _find(text: str, lines: list[tuple[str, BBox]], near: list[BBox]) -> list[BBox] | None:
    """The boxes of the lines `text` runs over on a page, where it is inside the source's own
    boxes when it occurs more than once (a running header repeats a title); None if absent."""
    joined, ranges = "", []
    for line, _ in lines:
        joined += " " if joined else ""
        ranges.append((len(joined), len(joined) + len(line)))
        joined += line
    found: list[list[BBox]] = []
    at = joined.find(text)
    while at >= 0:
        end = at + len(text)
        boxes = [box for (a, b), (_, box) in zip(ranges, lines, strict=True) if a < end and at < b]
        if all(any(_overlap(box, mine) for mine in near) for box in boxes):
            return boxes
        found.append(boxes)
        at = joined.find(text, at + 1)
    return found[0] if found else None


def _overlap(a: BBox, b: BBox) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
