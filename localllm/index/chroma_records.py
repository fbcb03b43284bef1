"""How a chunk is kept in Chroma: its provenance as metadata in, a StoredChunk out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from localllm.documents.model import Chunk


@dataclass
class StoredChunk:
    id: str
    doc_id: str
    name: str
    text: str
    pages: list[int]
    section: str | None
    boxes: list[tuple[int, tuple[float, float, float, float]]]
    distance: float | None = None


def chroma_metadata(chunk: Chunk, name: str) -> dict[str, Any]:
    return {
        "doc_id": chunk.doc_id,
        "name": name,
        "ordinal": chunk.ordinal,
        "page_first": chunk.pages[0] if chunk.pages else 0,
        "page_last": chunk.pages[-1] if chunk.pages else 0,
        "pages": json.dumps(chunk.pages),
        "section": chunk.section or "",
        "boxes": json.dumps(chunk.boxes),
    }


def stored_chunk(
    chunk_id: str, text: str, meta: dict[str, Any], distance: float | None
) -> StoredChunk:
    return StoredChunk(
        id=chunk_id,
        doc_id=str(meta["doc_id"]),
        name=str(meta["name"]),
        text=text,
        pages=json.loads(str(meta["pages"])),
        section=str(meta["section"]) or None,
        boxes=[(int(p), tuple(b)) for p, b in json.loads(str(meta["boxes"]))],  # type: ignore[misc]
        distance=distance,
    )
