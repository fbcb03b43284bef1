"""Reading a store back in tests: the nearest chunks, with their text, as the retriever gets them."""

from __future__ import annotations

import numpy as np

from localllm.index.chroma_records import StoredChunk
from localllm.index.store import DocumentStore


def nearest_chunks(
    store: DocumentStore, collection: str, embedding: np.ndarray, k: int = 10
) -> list[StoredChunk]:
    distances = dict(store.nearest(collection, embedding, k))
    found = store.chunks(collection, list(distances))
    for chunk in found:
        chunk.distance = distances[chunk.id]
    return found
