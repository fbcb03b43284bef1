"""The vector store: Chroma on disk under docs_store/, our own embeddings, one writer process.

With a Chroma server (Settings.chroma_url) only the vectors go to the server; the catalog, the BM25
indexes and the writer lock stay in docs_store/, which is this app's own. Its collections on the server
carry docs_store/'s id, so several apps may share one server. A server that is down gives a StoreError
naming it, and the next call tries again.

Writes are all-or-nothing per document. Chroma has no transactions, so the catalog (catalog.py) marks
a document 'indexing' before its chunks go in and 'ready' only after; a replaced or deleted document is
marked 'deleting' before its chunks go. Opening the store undoes what a crash left half-done.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from localllm.documents.chunk import chunk_id_prefix, search_text
from localllm.documents.model import Chunk, ParsedDocument
from localllm.errors import LocalLLMError, StoreError
from localllm.files import ensure_dir
from localllm.index.catalog import Catalog, CollectionInfo, DocumentRecord
from localllm.index.chroma_records import StoredChunk, chroma_metadata, stored_chunk
from localllm.index.chroma_server import open_server, server_address, server_failure, store_id
from localllm.index.lexical import LexicalHit, LexicalIndex
from localllm.index.writer_lock import WriterLock

DEFAULT_COLLECTION = "default"
T = TypeVar("T")
_BATCH = 500
# Measured: ~9.5 KB of Chroma and BM25 files per 200-token passage (573 passages of R-intro.pdf:
# 5.2 MB); twice that, and room for SQLite's journal and the HNSW index's growth.
BYTES_PER_CHUNK = 20 << 10
FREE_MARGIN = 32 << 20


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    """Run under the store's mutex; with a Chroma server, turn its failures into a StoreError."""

    @functools.wraps(method)
    def wrapper(self: DocumentStore, *args: Any, **kwargs: Any) -> T:
        with self._mutex:
            if self.chroma_url is None:
                return method(self, *args, **kwargs)
            outermost = not self._depth
            self._depth += 1
            try:
                if outermost and self._unsettled:
                    self._settle()
                return method(self, *args, **kwargs)
            except LocalLLMError:
                raise
            except Exception as e:
                error = self._server_error(e)
                if error is None:
                    raise
                raise error from e
            finally:
                self._depth -= 1

    return wrapper


class DocumentStore:
    """One process's handle on docs_store/; its methods may be called from several threads."""

    def __init__(self, folder: Path, *, chroma_url: str | None = None) -> None:
        """The store in `folder`; with `chroma_url` (http[s]://host:port) its vectors live on that
        Chroma server. Raises StoreError where the server is not reachable."""
        import chromadb

        self._mutex = threading.RLock()
        self.chroma_url = chroma_url.strip().rstrip("/") if chroma_url else None
        if self.chroma_url is not None:
            server_address(self.chroma_url)  # a malformed URL fails before anything is opened
        self._depth = 0
        self._unsettled = False  # a call failed on the server: recover before the next one
        self.folder = ensure_dir(folder)
        self._lock = WriterLock(self.folder / ".writer.lock")
        self._lexical_indexes: dict[str, LexicalIndex] = {}
        self._handles: dict[str, Any] = {}
        catalog: Catalog | None = None
        self._client: Any = None
        try:
            self.catalog = catalog = Catalog(self.folder / "catalog.sqlite3")
            if self.chroma_url is None:
                self._client = chromadb.PersistentClient(
                    path=str(self.folder / "chroma"),
                    settings=chromadb.Settings(anonymized_telemetry=False, allow_reset=False),
                )
                self._suffix = ""
            else:
                self._client = open_server(self.chroma_url)
                self._suffix = "-" + store_id(self.folder)
            self.recover()
        except BaseException:
            with contextlib.suppress(Exception):
                if self._client is not None:
                    self._client.close()
            if catalog is not None:
                catalog.close()
            self._lock.release()
            raise

    def _settle(self) -> None:
        """Undo what a call that failed on the server left half-done, if the server is back; while
        it is not, calls that need only the catalog still work."""
        self._unsettled = False
        with contextlib.suppress(StoreError):  # a server error sets _unsettled again
            self.recover()

    def _server_error(self, error: Exception) -> StoreError | None:
        """A StoreError for a Chroma server's failure (None: not the server's); drops what may be
        stale (collection handles) and has the next call finish what this one left half-done."""
        message = server_failure(str(self.chroma_url), error)
        if message is None:
            return None
        self._handles.clear()
        self._unsettled = True
        return StoreError(message)

    # collections
    def _chroma(self, info: CollectionInfo) -> Any:
        if info.chroma_name not in self._handles:
            self._handles[info.chroma_name] = self._client.get_or_create_collection(
                info.chroma_name + self._suffix,
                embedding_function=None,  # never Chroma's default, which fetches a model
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"localllm_name": info.name},
            )
        return self._handles[info.chroma_name]

    def _lexical(self, info: CollectionInfo) -> LexicalIndex:
        if info.chroma_name not in self._lexical_indexes:
            folder = self.folder / "bm25" / info.chroma_name
            self._lexical_indexes[info.chroma_name] = LexicalIndex(folder)
        return self._lexical_indexes[info.chroma_name]

    @_locked
    def collections(self) -> list[CollectionInfo]:
        return self.catalog.collections()

    @_locked
    def collection(self, name: str) -> CollectionInfo:
        info = self.catalog.collection(name)
        if info is None:
            known = ", ".join(c.name for c in self.collections()) or "none yet"
            raise StoreError(f"no collection named {name!r} (collections: {known})")
        return info

    @_locked
    def ensure_collection(self, name: str, *, scrub_pii: bool | None = None) -> CollectionInfo:
        name = name.strip()
        if not name or len(name) > 100 or any(ord(c) < 32 for c in name):
            raise StoreError(
                f"{name!r} is not a usable collection name (1-100 printable characters)"
            )
        info = self.catalog.collection(name)
        if info is None:
            info = self.catalog.add_collection(name, bool(scrub_pii))
        elif scrub_pii is not None and scrub_pii != info.scrub_pii:
            self.catalog.set_scrub(name, scrub_pii)
            info.scrub_pii = scrub_pii
        self._chroma(info)
        return info

    @_locked
    def delete_collection(self, name: str) -> None:
        info = self.collection(name)
        with self.catalog.transaction():
            for record in self.catalog.documents(name, status=None):
                self.catalog.set_status(name, record.doc_id, "deleting")
        self._handles.pop(info.chroma_name, None)
        from chromadb.errors import NotFoundError

        try:
            self._client.delete_collection(info.chroma_name + self._suffix)
        except Exception as e:  # already gone is fine; a server that fails is not
            if self.chroma_url is not None and not isinstance(e, NotFoundError):
                raise
        self._lexical(info).destroy()
        self.catalog.remove_collection(name)

    # documents
    @_locked
    def documents(self, collection: str | None = None) -> list[DocumentRecord]:
        return self.catalog.documents(collection)

    @_locked
    def find(
        self, collection: str, *, doc_id: str | None = None, name: str | None = None
    ) -> list[DocumentRecord]:
        return [
            d
            for d in self.catalog.documents(collection)
            if (doc_id is None or d.doc_id == doc_id) and (name is None or d.name == name)
        ]

    @_locked
    def add_document(
        self,
        collection: str,
        doc: ParsedDocument,
        chunks: Sequence[Chunk],
        embeddings: np.ndarray,
        *,
        source: str,
    ) -> tuple[DocumentRecord, list[DocumentRecord]]:
        """Store one document's chunks; replace older versions with the same name. All or nothing."""
        if len(chunks) != len(embeddings):
            raise StoreError(f"{len(chunks)} chunks but {len(embeddings)} embeddings")
        self.check_space(len(chunks))
        info = self.ensure_collection(collection)
        target = self._chroma(info)
        record = DocumentRecord(
            collection=collection,
            doc_id=doc.sha256,
            name=doc.name,
            source=source,
            pages=doc.pages,
            chunks=len(chunks),
            added=time.time(),
            status="indexing",
            warnings=list(doc.warnings),
        )
        with self.catalog.transaction():
            if self.find(collection, doc_id=doc.sha256):
                raise StoreError(f"{doc.name} is already in {collection!r}")
            self.catalog.insert(record)
        try:
            for start in range(0, len(chunks), _BATCH):
                batch = chunks[start : start + _BATCH]
                target.upsert(
                    ids=[c.id for c in batch],
                    embeddings=embeddings[start : start + _BATCH],
                    documents=[c.text for c in batch],
                    metadatas=[chroma_metadata(c, doc.name) for c in batch],
                )
            self._lexical(info).add_document(
                doc.sha256, [c.id for c in chunks], [search_text(c.text, c.section) for c in chunks]
            )
        except BaseException:
            self._drop(info, doc.sha256)
            raise
        older = [d for d in self.find(collection, name=doc.name) if d.doc_id != doc.sha256]
        with self.catalog.transaction():
            self.catalog.set_status(collection, doc.sha256, "ready")
            for old in older:
                self.catalog.set_status(collection, old.doc_id, "deleting")
        for old in older:
            self._drop(info, old.doc_id)
        record.status = "ready"
        return record, older

    @_locked
    def delete_document(self, collection: str, name: str) -> list[DocumentRecord]:
        info = self.collection(collection)
        matches = self.find(collection, name=name) or self.find(collection, doc_id=name)
        if not matches:
            raise StoreError(f"no document named {name!r} in collection {collection!r}")
        with self.catalog.transaction():
            for record in matches:
                self.catalog.set_status(collection, record.doc_id, "deleting")
        for record in matches:
            self._drop(info, record.doc_id)
        return matches

    def check_space(self, chunks: int) -> None:
        """Raise StoreError when the disk under the store can't hold `chunks` more passages:
        refused before anything is written (a store that fills its disk mid-write can hang)."""
        if self.chroma_url is not None:
            return  # the vectors go to the server's disk
        need = chunks * BYTES_PER_CHUNK + FREE_MARGIN
        free = shutil.disk_usage(self.folder).free
        if free < need:
            raise StoreError(
                f"not enough disk space for its {chunks} passages: about {need >> 20} MB needed, "
                f"{free >> 20} MB free where the documents are stored ({self.folder}); free some "
                "space and add it again (nothing was stored)"
            )

    def _drop(self, info: CollectionInfo, doc_id: str) -> None:
        self._chroma(info).delete(where={"doc_id": doc_id})
        self._lexical(info).remove_document(doc_id)
        self.catalog.remove(info.name, doc_id)

    @_locked
    def recover(self) -> int:
        """Undo half-written documents and finish half-done deletions; returns how many."""
        unfinished = [
            d for d in self.catalog.documents(status=None) if d.status in ("indexing", "deleting")
        ]
        for record in unfinished:
            self._drop(self.collection(record.collection), record.doc_id)
        return len(unfinished)

    # reading
    @_locked
    def count_chunks(self, collection: str) -> int:
        return int(self._chroma(self.collection(collection)).count())

    @_locked
    def chunks_of(self, collection: str, doc_id: str) -> list[StoredChunk]:
        got = self._chroma(self.collection(collection)).get(
            where={"doc_id": doc_id}, include=["documents", "metadatas"]
        )
        found = [
            stored_chunk(i, t, m, None)
            for i, t, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        ]
        return sorted(found, key=lambda c: c.id)

    @_locked
    def chunks(self, collection: str, ids: Sequence[str]) -> list[StoredChunk]:
        """The chunks with these ids, in the order given (unknown ids are left out)."""
        if not ids:
            return []
        got = self._chroma(self.collection(collection)).get(
            ids=list(ids), include=["documents", "metadatas"]
        )
        found = {
            i: stored_chunk(i, t, m, None)
            for i, t, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        }
        return [found[i] for i in ids if i in found]

    @_locked
    def nearest(
        self,
        collection: str,
        embedding: np.ndarray,
        n: int = 50,
        *,
        doc_ids: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """(chunk id, cosine distance) of the nearest chunks of fully indexed documents: ids only,
        which is several times faster than fetching the text with them at 100k chunks; `chunks()`
        fetches the text."""
        target = self._chroma(self.collection(collection))
        documents = self.catalog.documents(collection)
        if doc_ids is not None:
            documents = [d for d in documents if d.doc_id in set(doc_ids)]
        ready = {d.doc_id for d in documents}
        stored = sum(d.chunks for d in documents)  # Chroma's own count() takes ~10 ms at 100k
        if not stored:
            return []
        where = {"doc_id": {"$in": sorted(ready)}} if doc_ids is not None else None
        got = target.query(
            query_embeddings=[embedding],
            n_results=min(n, stored),
            where=where,
            include=["distances"],
        )
        prefixes = {chunk_id_prefix(d) for d in ready}
        return [
            (i, float(d))
            for i, d in zip(got["ids"][0], got["distances"][0], strict=True)
            if i.rsplit("-", 1)[0] in prefixes
        ]

    @_locked
    def lexical_query(
        self, collection: str, text: str, k: int = 10, *, doc_ids: Sequence[str] | None = None
    ) -> list[LexicalHit]:
        """Best chunks by BM25 over the collection's ready documents."""
        index = self.sync_lexical(collection)
        return index.search(text, k, doc_ids)

    @_locked
    def sync_lexical(self, collection: str) -> LexicalIndex:
        """Bring the collection's BM25 index up to date now (else the next search does it)."""
        info = self.collection(collection)
        ready = [d.doc_id for d in self.catalog.documents(collection)]
        index = self._lexical(info)

        def backfill(doc_id: str) -> tuple[list[str], list[str]]:
            stored = self.chunks_of(collection, doc_id)
            return [c.id for c in stored], [search_text(c.text, c.section) for c in stored]

        index.sync(ready, backfill)
        return index

    def close(self) -> None:
        """Not _locked: closing never waits for a Chroma server, up or down."""
        with self._mutex:
            try:
                self._client.close()
            finally:
                self.catalog.close()
                self._lock.release()
