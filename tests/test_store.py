"""The document store on real Chroma on disk: replace, delete, restart, one writer, crash safety."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from localllm.documents.model import Chunk, ParsedDocument
from localllm.errors import StoreBusyError, StoreError
from localllm.index.store import DocumentStore
from tests.conftest import ROOT
from tests.store_helpers import nearest_chunks

DIM = 384


def make_doc(
    name: str, sha: str, n_chunks: int, seed: int = 0
) -> tuple[ParsedDocument, list[Chunk], np.ndarray]:
    doc = ParsedDocument(path=f"/x/{name}", name=name, sha256=sha, pages=n_chunks, elements=[])
    chunks = [
        Chunk(
            id=f"{sha[:24]}-{i:05d}",
            doc_id=sha,
            ordinal=i,
            text=f"{name} chunk {i}",
            pages=[i + 1],
            section=f"Section {i // 10}",
            boxes=[(i + 1, (10.0, 20.0, 300.0, 40.0))],
        )
        for i in range(n_chunks)
    ]
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n_chunks, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return doc, chunks, vectors


def test_add_query_and_provenance(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path / "store")
    try:
        doc, chunks, vectors = make_doc("a.pdf", "a" * 64, 30)
        record, replaced = store.add_document("default", doc, chunks, vectors, source="/x/a.pdf")
        assert record.status == "ready" and replaced == []
        assert store.count_chunks("default") == 30
        hits = nearest_chunks(store, "default", vectors[17], k=3)
        assert hits[0].id == chunks[17].id
        assert hits[0].pages == [18] and hits[0].section == "Section 1" and hits[0].name == "a.pdf"
        assert hits[0].boxes == [(18, (10.0, 20.0, 300.0, 40.0))]
        assert hits[0].distance == pytest.approx(0.0, abs=1e-4)
        with pytest.raises(StoreError, match="already in"):
            store.add_document("default", doc, chunks, vectors, source="/x/a.pdf")
    finally:
        store.close()


def test_changed_file_replaces_its_chunks_and_delete_survives_restart(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    store = DocumentStore(folder)
    try:
        store.add_document("c", *make_doc("a.pdf", "a" * 64, 10), source="a")
        store.add_document("c", *make_doc("b.pdf", "b" * 64, 5), source="b")
        new_doc, new_chunks, new_vectors = make_doc("a.pdf", "f" * 64, 4, seed=1)
        _, replaced = store.add_document("c", new_doc, new_chunks, new_vectors, source="a")
        assert [r.doc_id for r in replaced] == ["a" * 64]
        assert store.count_chunks("c") == 9
        assert {d.name: d.doc_id for d in store.documents("c")} == {
            "a.pdf": "f" * 64,
            "b.pdf": "b" * 64,
        }
        store.delete_document("c", "b.pdf")
    finally:
        store.close()
    reopened = DocumentStore(folder)
    try:
        assert [d.name for d in reopened.documents("c")] == ["a.pdf"]
        assert reopened.count_chunks("c") == 4
        assert {h.doc_id for h in nearest_chunks(reopened, "c", new_vectors[0], k=10)} == {"f" * 64}
        with pytest.raises(StoreError, match="no document named"):
            reopened.delete_document("c", "b.pdf")
        reopened.delete_collection("c")
        assert reopened.collections() == []
    finally:
        reopened.close()


def test_collections_accept_any_name_and_unknown_ones_are_clear_errors(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path / "store")
    try:
        info = store.ensure_collection("Legal / 2024 (draft) é", scrub_pii=True)
        assert info.scrub_pii and store.collection("Legal / 2024 (draft) é").scrub_pii
        with pytest.raises(StoreError, match="no collection named 'nope'"):
            store.collection("nope")
        with pytest.raises(StoreError, match="not a usable collection name"):
            store.ensure_collection("  ")
    finally:
        store.close()


HOLD_STORE = """
import sys, time
from localllm.index.store import DocumentStore
store = DocumentStore(__import__("pathlib").Path(sys.argv[1]))
print("open", flush=True)
time.sleep(60)
"""


def test_a_second_writer_gets_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_STORE, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(
            StoreBusyError, match=rf"in use by another LocalLLM process \(pid {holder.pid}\)"
        ):
            DocumentStore(folder)
    finally:
        holder.kill()
        holder.wait()
    DocumentStore(folder).close()  # free again once the holder is gone


WRITE_BIG = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests.test_store import make_doc
    from localllm.index.store import DocumentStore
    store = DocumentStore(Path(sys.argv[1]))
    store.add_document("default", *make_doc("big.pdf", "e" * 64, 40000, seed=3), source="big")
    print("finished", flush=True)
    """
)


REOPEN_AFTER_KILL = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests.test_store import make_doc
    from tests.store_helpers import nearest_chunks
    from localllm.index.store import DocumentStore
    first = make_doc("keep.pdf", "d" * 64, 50)
    store = DocumentStore(Path(sys.argv[1]))
    try:
        assert [d.name for d in store.documents()] == ["keep.pdf"], store.documents()
        count = store.count_chunks("default")
        assert count == 50, f"{count} chunks: the half-written document's are left"
        assert nearest_chunks(store, "default", first[2][7], k=1)[0].id == first[1][7].id
        # The same ingest can simply be run again.
        record, _ = store.add_document(
            "default", *make_doc("big.pdf", "e" * 64, 300, seed=3), source="big"
        )
        assert record.status == "ready" and store.count_chunks("default") == 350
    finally:
        store.close()
    print("recovered", flush=True)
    """
)
# Chroma's Rust core can crash (SIGSEGV) on a store whose HNSW files a SIGKILL tore mid-write
# (chroma-core/chroma#7678, chromadb 1.5.9; seen once in two full runs here).
SEGFAULT = -signal.SIGSEGV


def test_kill_9_mid_ingest_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    store = DocumentStore(folder)
    first = make_doc("keep.pdf", "d" * 64, 50)
    store.add_document("default", *first, source="keep")
    store.close()

    writer = subprocess.Popen(
        [sys.executable, "-c", WRITE_BIG, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    catalog = folder / "catalog.sqlite3"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with sqlite3.connect(catalog) as db:
            if db.execute("SELECT 1 FROM documents WHERE status = 'indexing'").fetchone():
                break
        time.sleep(0.05)
    else:
        writer.kill()
        pytest.fail("the writer never started indexing")
    time.sleep(1.5)  # let some batches of chunks land in Chroma
    writer.kill()  # SIGKILL: no cleanup runs
    writer.wait()
    assert writer.stdout is not None and "finished" not in writer.stdout.read()

    # Reopened in a process of its own, so that a crash of Chroma's core fails this test alone.
    reopened = subprocess.run(
        [sys.executable, "-c", REOPEN_AFTER_KILL, str(folder)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    if reopened.returncode == SEGFAULT:
        pytest.xfail("Chroma's core crashed on the torn store (chroma-core/chroma#7678)")
    assert reopened.returncode == 0 and "recovered" in reopened.stdout, reopened.stderr[-3000:]
