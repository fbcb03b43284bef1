"""The heavy objects of a running app, built lazily by one owner and handed to the UI and CLI."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from localllm.config import Settings
from localllm.llm.base import ChatModel
from localllm.llm.manager import ModelManager

if TYPE_CHECKING:
    from localllm.chat.conversations import ConversationStore
    from localllm.chat.service import ChatService
    from localllm.index.embed import Embedder
    from localllm.index.ingest import Ingestor
    from localllm.index.jobs import IngestJob
    from localllm.index.retrieve import Retriever
    from localllm.index.store import DocumentStore
    from localllm.rag.answer import GroundedChat


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models = ModelManager(settings)
        self._lock = threading.Lock()
        self._store: DocumentStore | None = None
        self._embedder: Embedder | None = None
        self._conversations: ConversationStore | None = None
        self.jobs: dict[str, IngestJob] = {}

    @property
    def store(self) -> DocumentStore:
        """The document store, opened on first use (this process then holds its writer lock)."""
        with self._lock:
            if self._store is None:
                from localllm.index.store import DocumentStore

                self._store = DocumentStore(
                    self.settings.docs_store, chroma_url=self.settings.chroma_url
                )
            return self._store

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                from localllm.index.embed import Embedder

                self._embedder = Embedder(
                    self.settings.embedder_path,
                    backend=self.settings.embed_backend,
                    cache_dir=self.settings.cache_dir / "embedder",
                )
            return self._embedder

    @property
    def conversations(self) -> ConversationStore:
        with self._lock:
            if self._conversations is None:
                from localllm.chat.conversations import ConversationStore

                self._conversations = ConversationStore(self.settings.conversations_path)
            return self._conversations

    def ingestor(self) -> Ingestor:
        from localllm.index.ingest import Ingestor

        return Ingestor(
            self.store,
            self.embedder,
            chunk_tokens=self.settings.chunk_tokens,
            ocr=self.settings.ocr,
        )

    def retriever(self, judge: ChatModel | None = None) -> Retriever:
        """Hybrid search; with rerank = "llm", `judge` (default: the loaded model) reranks it."""
        from localllm.index.retrieve import Retriever

        reranker = None
        if self.settings.rerank == "llm":
            from localllm.rag.rerank import ModelJudgeReranker

            reranker = ModelJudgeReranker(judge or self.models.loaded or self.models.get())
        return Retriever(self.store, self.embedder, reranker)

    def grounded(self, judge: ChatModel | None = None) -> GroundedChat:
        """Grounded answers; `judge` should be the model that will answer (see retriever)."""
        from localllm.rag.answer import GroundedChat

        return GroundedChat(
            self.retriever(judge),
            sources=self.settings.rag_sources,
            min_similarity=self.settings.rag_min_similarity,
            support_threshold=self.settings.rag_support_threshold,
            quote_threshold=self.settings.rag_quote_threshold,
            lead_threshold=self.settings.rag_lead_threshold,
            unknown_share=self.settings.rag_unknown_share,
            unknown_names=self.settings.rag_unknown_names,
            order=self.settings.rag_source_order,
        )

    @property
    def chat(self) -> ChatService:
        """The one place chat answers are assembled, for every face."""
        from localllm.chat.service import ChatService

        return ChatService(self)

    def close(self) -> None:
        self.models.close()
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            if self._embedder is not None:
                self._embedder.close()
                self._embedder = None
            if self._conversations is not None:
                self._conversations.close()
                self._conversations = None
