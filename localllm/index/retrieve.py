"""Hybrid search: vector neighbours (Chroma) and BM25 (bm25s) fused by reciprocal rank, then an
optional rerank, over one collection, optionally limited to some of its documents."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from localllm.errors import StoreError
from localllm.index.chroma_records import StoredChunk
from localllm.index.embed import Embedder
from localllm.index.navigation import is_navigation
from localllm.index.store import DocumentStore

Mode = Literal["hybrid", "vector", "lexical"]
MODES: tuple[Mode, ...] = ("hybrid", "vector", "lexical")
RRF_K = 60  # the constant of Cormack et al. (2009), used as is
CANDIDATES = 50  # taken from each list before fusion


@dataclass
class SearchHit:
    chunk: StoredChunk
    score: (
        float  # hybrid: fused rank score scaled to 0..1; vector: cosine similarity; lexical: BM25
    )
    similarity: float | None = None  # cosine similarity to the query, where the vector list had it
    bm25: float | None = None
    rerank: float | None = None

    @property
    def file(self) -> str:
        return self.chunk.name

    @property
    def page(self) -> int | None:
        return self.chunk.pages[0] if self.chunk.pages else None

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.chunk.name,
            "pages": self.chunk.pages,
            "section": self.chunk.section,
            "text": self.chunk.text,
            "score": round(self.score, 4),
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "bm25": None if self.bm25 is None else round(self.bm25, 4),
            "chunk_id": self.chunk.id,
        }


@dataclass
class SearchResult:
    hits: list[SearchHit]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    top_similarity: float | None = None  # the nearest chunk's cosine similarity (None: not asked)


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        """The same hits, best first, each with its `rerank` score set."""
        ...


def fuse(ranked_lists: Sequence[Sequence[str]], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal-rank fusion scaled so that first place in every list scores 1.0."""
    fused: dict[str, float] = {}
    for ranked in ranked_lists:
        for rank, key in enumerate(ranked, start=1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    best = len(ranked_lists) / (k + 1)
    return {key: score / best for key, score in fused.items()}


class Retriever:
    def __init__(
        self, store: DocumentStore, embedder: Embedder, reranker: Reranker | None = None
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.reranker = reranker

    def doc_ids(self, collection: str, documents: Sequence[str] | None) -> list[str] | None:
        """The ids of the named documents (by file name or id); None means all of them."""
        if not documents:
            return None
        known = self.store.documents(collection)
        ids = [d.doc_id for d in known if d.name in documents or d.doc_id in documents]
        missing = set(documents) - {d.name for d in known} - {d.doc_id for d in known}
        if missing:
            raise StoreError(
                f"no document named {', '.join(sorted(missing))} in collection {collection!r}"
            )
        return ids

    def search(
        self,
        query: str,
        collection: str,
        *,
        k: int = 10,
        documents: Sequence[str] | None = None,
        mode: Mode = "hybrid",
        rerank: bool = True,
        navigation: bool = False,
    ) -> SearchResult:
        """The `k` best passages; contents, index and bare-heading passages are left out unless
        `navigation` (see index/navigation.py)."""
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r} (choose from {', '.join(MODES)})")
        started = time.perf_counter()
        timings: dict[str, float] = {}
        doc_ids = self.doc_ids(collection, documents)
        query = query.strip()
        if not query:
            return SearchResult([], 0.0)
        n = max(k, CANDIDATES)

        vector: list[tuple[str, float]] = []
        if mode != "lexical":
            t = time.perf_counter()
            embedding = self.embedder.for_collection(self.store, collection).embed_query(query)
            timings["embed"] = time.perf_counter() - t
            t = time.perf_counter()
            vector = self.store.nearest(collection, embedding, n, doc_ids=doc_ids)
            timings["vector"] = time.perf_counter() - t
        lexical = []
        if mode != "vector":
            t = time.perf_counter()
            lexical = self.store.lexical_query(collection, query, n, doc_ids=doc_ids)
            timings["bm25"] = time.perf_counter() - t

        similarity = {chunk_id: 1.0 - distance for chunk_id, distance in vector}
        bm25 = {h.chunk_id: h.score for h in lexical}
        if mode == "vector":
            order, scores = [chunk_id for chunk_id, _ in vector], similarity
        elif mode == "lexical":
            order, scores = [h.chunk_id for h in lexical], bm25
        else:
            scores = fuse([[chunk_id for chunk_id, _ in vector], [h.chunk_id for h in lexical]])
            order = sorted(scores, key=lambda key: -scores[key])

        reranking = rerank and self.reranker is not None
        wanted = max(k, 20) if reranking else k
        keep = order[: wanted if navigation else 2 * wanted]
        t = time.perf_counter()
        chunks = {c.id: c for c in self.store.chunks(collection, keep)}
        timings["fetch"] = time.perf_counter() - t
        hits = [
            SearchHit(chunks[i], scores[i], similarity.get(i), bm25.get(i))
            for i in keep
            if i in chunks and (navigation or not is_navigation(chunks[i].text, chunks[i].section))
        ][:wanted]
        if reranking and self.reranker is not None:
            t = time.perf_counter()
            hits = self.reranker.rerank(query, hits)
            timings["rerank"] = time.perf_counter() - t
        top = max(similarity.values(), default=0.0) if mode != "lexical" else None
        return SearchResult(hits[:k], time.perf_counter() - started, timings, top)
