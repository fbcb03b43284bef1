"""Elements -> token-budgeted chunks that respect section boundaries and never span two documents."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from localllm.documents.model import BBox, Chunk, Element, ParsedDocument
from localllm.documents.tables import is_markdown_table, split_table

CountTokens = Callable[[str], int]

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def chunk_id(doc_id: str, ordinal: int) -> str:
    """Stable across runs: the same document chunked with the same settings gets the same ids."""
    return f"{chunk_id_prefix(doc_id)}-{ordinal:05d}"


def chunk_id_prefix(doc_id: str) -> str:
    """The part of every chunk id that names its document."""
    return doc_id[:24]


def _pieces(text: str, count: CountTokens, budget: int) -> Iterator[str]:
    """Split text longer than the budget at sentence ends, then at spaces, then by characters."""
    if count(text) <= budget:
        yield text
        return
    parts = [s for s in _SENTENCE_END.split(text) if s.strip()]
    if len(parts) == 1:
        parts = text.split()
    if len(parts) == 1:  # one unbroken run of characters
        step = max(1, len(text) * budget // (count(text) + 1))
        for i in range(0, len(text), step):
            yield text[i : i + step]
        return
    current: list[str] = []
    for part in parts:
        if current and count(" ".join([*current, part])) > budget:
            yield from _pieces(" ".join(current), count, budget)
            current = [part]
        else:
            current.append(part)
    if current:
        yield from _pieces(" ".join(current), count, budget)


class _Builder:
    def __init__(self, doc_id: str) -> None:
        self.doc_id = doc_id
        self.chunks: list[Chunk] = []
        self.reset(None)

    def reset(self, section: str | None) -> None:
        self.texts: list[str] = []
        self.pages: set[int] = set()
        self.boxes: list[tuple[int, BBox]] = []
        self.tokens = 0
        self.section = section
        self.only_titles = True  # nothing but headings so far: they belong with what follows

    def add(self, text: str, tokens: int, element: Element) -> None:
        self.texts.append(text)
        self.tokens += tokens
        if element.page is not None:
            self.pages.add(element.page)
            if element.bbox is not None:
                self.boxes.append((element.page, element.bbox))

    def flush(self) -> None:
        text = "\n".join(t for t in self.texts if t.strip()).strip()
        if text:
            ordinal = len(self.chunks)
            self.chunks.append(
                Chunk(
                    id=chunk_id(self.doc_id, ordinal),
                    doc_id=self.doc_id,
                    ordinal=ordinal,
                    text=text,
                    pages=sorted(self.pages),
                    section=self.section,
                    boxes=list(self.boxes),
                )
            )
        self.reset(self.section)


def chunk_document(
    doc: ParsedDocument, count_tokens: CountTokens, max_tokens: int = 200
) -> list[Chunk]:
    """Pack a document's elements, in order, into chunks of at most `max_tokens` tokens.

    A new section (a title element, or a change of the elements' section) starts a new chunk, so a
    chunk holds one section's text; the title itself opens the chunk it heads. A Markdown table too
    big for one chunk is cut between rows, and each of its chunks starts with the header row.
    """
    builder = _Builder(doc.sha256)
    for element in doc.elements:
        text = element.text.strip()
        if not text:
            continue
        title = element.kind == "title"
        section = text if title else element.section
        heading_waits = not title and builder.texts and builder.only_titles
        if (title and not (builder.texts and builder.only_titles)) or (
            section != builder.section and not heading_waits
        ):
            builder.flush()
            builder.section = section
        elif title:
            builder.section = section
        tokens = count_tokens(text)
        if tokens > max_tokens:
            builder.flush()
            for piece in _oversized(text, element, count_tokens, max_tokens):
                builder.add(piece, count_tokens(piece), element)
                builder.flush()
            continue
        if builder.tokens + tokens > max_tokens:
            builder.flush()
        builder.add(text, tokens, element)
        builder.only_titles = builder.only_titles and title
    builder.flush()
    return builder.chunks


def _oversized(text: str, element: Element, count: CountTokens, budget: int) -> Iterator[str]:
    """An element over the budget in pieces: a Markdown table between rows (a row too long for a
    chunk in parts), each piece under the header row; other text at sentence ends, then spaces."""
    if element.kind != "table" or not is_markdown_table(text):
        yield from _pieces(text, count, budget)
        return
    head = "\n".join(text.split("\n", 2)[:2])
    room = max(1, budget - count(head) - 1)
    for piece in split_table(text, count, budget):
        if count(piece) <= budget:
            yield piece
        else:  # one row longer than a chunk: cut the row, each part under the header still
            for part in _pieces(piece.split("\n", 2)[2], count, room):
                yield f"{head}\n{part}"


def search_text(text: str, section: str | None) -> str:
    """What the embedder and BM25 see: the section title gives a chunk context its text may lack."""
    if section and not text.startswith(section):
        return f"{section}\n{text}"
    return text
