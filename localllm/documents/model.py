"""What parsing and chunking produce: text with its provenance (file, page, section, position)."""

from __future__ import annotations

from dataclasses import dataclass, field

from localllm.errors import LocalLLMError

# (x0, y0, x1, y1) in PDF points, origin at the page's top-left corner, y growing downwards.
BBox = tuple[float, float, float, float]


class DocumentError(LocalLLMError):
    """A file that can't be indexed; the message says which file and why, fit to show a user."""


@dataclass
class Element:
    """One block of text in reading order: a title, a paragraph, a list item, a table."""

    text: str
    page: int | None  # 1-based; None where the format has no pages (txt, md, html)
    kind: str = "text"  # "title" | "text" | "list" | "table"
    section: str | None = None  # the nearest heading above this element
    bbox: BBox | None = None


@dataclass
class ParsedDocument:
    path: str
    name: str
    sha256: str
    pages: int  # 0 where the format has no pages
    elements: list[Element]
    warnings: list[str] = field(default_factory=list)
    skipped_pages: list[int] = field(default_factory=list)  # no text and no OCR: not indexed


@dataclass
class Chunk:
    id: str  # stable: the document's hash and the chunk's ordinal
    doc_id: str  # the document's sha256
    ordinal: int
    text: str
    pages: list[int]  # every page the chunk spans, ascending; empty for page-less formats
    section: str | None = None
    boxes: list[tuple[int, BBox]] = field(default_factory=list)  # (page, bbox) of its elements
