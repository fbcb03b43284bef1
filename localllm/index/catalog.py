"""The document catalog beside the vector store (SQLite): collections, documents and their state.

A document's row says where its chunks are in their life: 'indexing' while they are being written,
'ready' once complete, 'deleting' while they are being removed. Only 'ready' documents are shown or
searched; on open, the store finishes or undoes whatever a crash left in the other two states.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    chroma_name TEXT NOT NULL UNIQUE,
    scrub_pii INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    embedder TEXT
);
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
    doc_id TEXT NOT NULL,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    pages INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    added REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('indexing', 'ready', 'deleting')),
    warnings TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (collection, doc_id)
);
CREATE INDEX IF NOT EXISTS documents_by_name ON documents(collection, name);
"""


@dataclass
class CollectionInfo:
    name: str
    chroma_name: str
    scrub_pii: bool
    created: float
    embedder: str | None = None  # the model folder, relative to the store; None: the app's own


@dataclass
class DocumentRecord:
    collection: str
    doc_id: str
    name: str
    source: str
    pages: int
    chunks: int
    added: float
    status: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "collection": self.collection,
            "name": self.name,
            "doc_id": self.doc_id,
            "source": self.source,
            "pages": self.pages,
            "chunks": self.chunks,
            "added": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.added)),
            "status": self.status,
            "warnings": self.warnings,
        }


def chroma_name_for(collection: str) -> str:
    """Chroma allows only [a-zA-Z0-9._-] names; users may name a collection anything."""
    return "c-" + hashlib.sha256(collection.encode("utf-8")).hexdigest()[:32]


class Catalog:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(collections)")}
        if "embedder" not in columns:  # a catalog from before adapted embedders
            self._db.execute("ALTER TABLE collections ADD COLUMN embedder TEXT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # collections
    def collections(self) -> list[CollectionInfo]:
        rows = self._db.execute(
            "SELECT name, chroma_name, scrub_pii, created, embedder FROM collections ORDER BY name"
        ).fetchall()
        return [CollectionInfo(r[0], r[1], bool(r[2]), r[3], r[4]) for r in rows]

    def collection(self, name: str) -> CollectionInfo | None:
        return next((c for c in self.collections() if c.name == name), None)

    def add_collection(self, name: str, scrub_pii: bool) -> CollectionInfo:
        info = CollectionInfo(name, chroma_name_for(name), scrub_pii, time.time())
        self._db.execute(
            "INSERT INTO collections (name, chroma_name, scrub_pii, created) VALUES (?, ?, ?, ?)",
            (info.name, info.chroma_name, int(info.scrub_pii), info.created),
        )
        return info

    def set_scrub(self, name: str, scrub_pii: bool) -> None:
        self._db.execute(
            "UPDATE collections SET scrub_pii = ? WHERE name = ?", (int(scrub_pii), name)
        )

    def set_vectors(self, name: str, chroma_name: str, embedder: str | None) -> None:
        """Point the collection at other vectors and the model that embedded them."""
        self._db.execute(
            "UPDATE collections SET chroma_name = ?, embedder = ? WHERE name = ?",
            (chroma_name, embedder, name),
        )

    def remove_collection(self, name: str) -> None:
        self._db.execute("DELETE FROM collections WHERE name = ?", (name,))

    # documents
    def documents(
        self, collection: str | None = None, status: str | None = "ready"
    ) -> list[DocumentRecord]:
        sql = (
            "SELECT collection, doc_id, name, source, pages, chunks, added, status, warnings "
            "FROM documents WHERE 1=1"
        )
        args: list[object] = []
        if collection is not None:
            sql += " AND collection = ?"
            args.append(collection)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        rows = self._db.execute(sql + " ORDER BY collection, name", args).fetchall()
        return [DocumentRecord(*r[:8], warnings=json.loads(r[8])) for r in rows]

    def insert(self, record: DocumentRecord) -> None:
        self._db.execute(
            "INSERT INTO documents (collection, doc_id, name, source, pages, chunks, added, status,"
            " warnings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.collection,
                record.doc_id,
                record.name,
                record.source,
                record.pages,
                record.chunks,
                record.added,
                record.status,
                json.dumps(record.warnings),
            ),
        )

    def set_status(self, collection: str, doc_id: str, status: str) -> None:
        self._db.execute(
            "UPDATE documents SET status = ? WHERE collection = ? AND doc_id = ?",
            (status, collection, doc_id),
        )

    def remove(self, collection: str, doc_id: str) -> None:
        self._db.execute(
            "DELETE FROM documents WHERE collection = ? AND doc_id = ?", (collection, doc_id)
        )
