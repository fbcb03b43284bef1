"""hit@k of an embedder on questions about a collection: vector search only, since the embedder
is all that adaptation changes (BM25 ranks the same text the same way before and after).

A question's answer is its passage's file and first page, scored by eval/metrics.py: a hit is any
retrieved passage of that file whose pages include that page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from localllm.eval.metrics import RetrievalScores, score_retrieval
from localllm.index.chroma_records import stored_chunk
from localllm.index.embed import Embedder
from localllm.index.store import DocumentStore

K = 10


@dataclass(frozen=True)
class Question:
    """A question generated from one passage, with where that passage is."""

    question: str
    chunk_id: str
    file: str
    page: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "chunk_id": self.chunk_id,
            "file": self.file,
            "page": self.page,
        }


def score(
    store: DocumentStore,
    chroma_name: str,
    embedder: Embedder,
    questions: Sequence[Question],
    *,
    should_stop: Callable[[], bool] | None = None,
) -> RetrievalScores:
    """The scores of `embedder` searching the vectors in `chroma_name` (which it must have made)."""
    with store._mutex:
        vectors = store._handles.get(chroma_name) or store._client.get_collection(
            chroma_name + store._suffix
        )
    embedded = embedder.embed([q.question for q in questions], should_stop=should_stop)
    results: list[list[tuple[str, list[int]]]] = []
    latencies: list[float] = []
    for vector in embedded:
        started = time.perf_counter()
        with store._mutex:
            got = vectors.query(
                query_embeddings=[vector], n_results=K, include=["documents", "metadatas"]
            )
        latencies.append(time.perf_counter() - started)
        found = [
            stored_chunk(i, t, m, None)
            for i, t, m in zip(got["ids"][0], got["documents"][0], got["metadatas"][0], strict=True)
        ]
        results.append([(c.name, c.pages) for c in found])
    return score_retrieval(results, [(q.file, q.page) for q in questions], latencies)
