"""A collection's vectors made again by another embedder, beside the old ones, and the switch.

The new vectors go into a Chroma collection of their own (a "shadow"); the catalog keeps pointing at
the old ones, which search goes on using, until `switch` points it at the new ones in one catalog
update, which is the moment the collection changes embedder. Until then, dropping the shadow leaves
the collection as it was. Every chunk is copied with its id, text and metadata as stored; only its
vector is new.

This is the store's own business done beside it (store.py is at its size limit): it works on the
store's Chroma client, handles and BM25 indexes under the store's mutex.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Callable
from typing import Any

from localllm.documents.chunk import search_text
from localllm.errors import StoreError
from localllm.index.catalog import CollectionInfo
from localllm.index.embed import Embedder, EmbeddingCancelled
from localllm.index.store import DocumentStore


class VectorsCancelled(Exception):
    pass


def shadow_name(info: CollectionInfo, stamp: str) -> str:
    """The new vectors' Chroma name: the collection's own name with the run's stamp."""
    base = info.chroma_name.split("-e", 1)[0]
    return f"{base}-e{stamp}"


def _shadow(store: DocumentStore, collection: str, chroma_name: str) -> Any:
    info = dataclasses.replace(store.collection(collection), chroma_name=chroma_name)
    return store._chroma(info)


def _copy_document(
    store: DocumentStore,
    source: Any,
    target: Any,
    doc_id: str,
    embedder: Embedder,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    with store._mutex:
        got = source.get(where={"doc_id": doc_id}, include=["documents", "metadatas"])
    ids, texts, metas = got["ids"], got["documents"], got["metadatas"]
    if not ids:
        return 0
    vectors = embedder.embed(
        [
            search_text(t, str(m.get("section") or "") or None)
            for t, m in zip(texts, metas, strict=True)
        ],
        on_progress=on_progress,
        should_stop=should_stop,
    )
    with store._mutex:
        for start in range(0, len(ids), 500):
            end = start + 500
            target.upsert(
                ids=ids[start:end],
                embeddings=vectors[start:end],
                documents=texts[start:end],
                metadatas=metas[start:end],
            )
    return len(ids)


def build_shadow(
    store: DocumentStore,
    collection: str,
    chroma_name: str,
    embedder: Embedder,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[str]:
    """Copy every ready document's chunks into `chroma_name` with `embedder`'s vectors; returns
    the document ids copied. The collection itself is not touched."""
    info = store.collection(collection)
    source = store._chroma(info)
    target = _shadow(store, collection, chroma_name)
    records = store.documents(collection)
    total = sum(r.chunks for r in records)
    done = 0
    copied = []
    for record in records:
        if should_stop is not None and should_stop():
            raise VectorsCancelled(f"re-embedding stopped after {done} of {total} passages")

        def step(finished: int, _of: int, before: int = done) -> None:
            if on_progress is not None:
                on_progress(before + finished, total)

        try:
            done += _copy_document(
                store, source, target, record.doc_id, embedder, step, should_stop
            )
        except EmbeddingCancelled as e:
            raise VectorsCancelled(str(e)) from e
        copied.append(record.doc_id)
        if on_progress is not None:
            on_progress(done, total)
    return copied


def switch(
    store: DocumentStore,
    collection: str,
    chroma_name: str,
    copied: list[str],
    embedder: Embedder,
    model: str | None,
) -> str:
    """Point `collection` at the vectors in `chroma_name`, embedded by `model` (a folder relative
    to the store; None: the app's embedder). Documents added or removed since `build_shadow` are
    brought over first, and the shadow must then hold every chunk, or nothing changes. Returns
    the old vectors' Chroma name, which `drop` removes."""
    with store._mutex:
        info = store.collection(collection)
        source = store._chroma(info)
        target = _shadow(store, collection, chroma_name)
        ready = {r.doc_id: r for r in store.documents(collection)}
        for doc_id in set(copied) - set(ready):
            target.delete(where={"doc_id": doc_id})
        for doc_id in sorted(set(ready) - set(copied)):
            _copy_document(store, source, target, doc_id, embedder)
        expected = sum(r.chunks for r in ready.values())
        if int(target.count()) != expected:
            raise StoreError(
                f"the re-embedded vectors of {collection!r} hold {target.count()} passages, not "
                f"{expected}; the collection keeps its old embedder"
            )
        old_lexical = store.folder / "bm25" / info.chroma_name
        new_lexical = store.folder / "bm25" / chroma_name
        if old_lexical.is_dir():
            shutil.rmtree(new_lexical, ignore_errors=True)
            shutil.copytree(old_lexical, new_lexical)
        store.catalog.set_vectors(collection, chroma_name, model)
        store._lexical_indexes.pop(chroma_name, None)
        return info.chroma_name


def drop(store: DocumentStore, chroma_name: str) -> None:
    """Remove vectors no collection points at any more (a discarded shadow, or the old vectors
    after a switch), with their BM25 copy. Vectors a collection uses are refused."""
    with store._mutex:
        if any(c.chroma_name == chroma_name for c in store.catalog.collections()):
            raise StoreError(f"the vectors {chroma_name} are in use; not removing them")
        store._handles.pop(chroma_name, None)
        store._lexical_indexes.pop(chroma_name, None)
        with contextlib.suppress(Exception):  # already gone is fine
            store._client.delete_collection(chroma_name + store._suffix)
        shutil.rmtree(store.folder / "bm25" / chroma_name, ignore_errors=True)
