"""Adapting the embedder to a collection, on real parts: twelve real pages of the Debian FAQ in
Chroma on disk, the bundled MiniLM trained for a few steps in its own process, its ONNX embedder
built as the bundled one is, the bundled SmolLM2 writing questions; the CLI run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from localllm.adapt_embedder import decide, run
from localllm.errors import StoreError
from localllm.index.adapt import AdaptCancelled, AdaptOptions, pending
from localllm.index.adapt_pairs import AdaptError, read_questions, split
from localllm.index.adapt_score import Question
from localllm.index.retrieve import Retriever
from localllm.index.store import DocumentStore
from localllm.services import Services
from tests.conftest import RunningApp, require
from tests.rag_fixtures import clean_cli_env, clean_settings, faq_path

FIRST_PAGE, PAGES = 8, 12  # 0-based: the FAQ's pages 9-20, its first chapters after the contents
QUICK = AdaptOptions(steps=3, batch_size=4, held_out=0.25, max_passages=10)


def faq_pages(target: Path) -> Path:
    """A real PDF: twelve pages of the Debian FAQ, copied page by page."""
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(str(faq_path()))
    part = pdfium.PdfDocument.new()
    part.import_pages(source, list(range(FIRST_PAGE, FIRST_PAGE + PAGES)))
    part.save(str(target))
    part.close()
    source.close()
    return target


def snapshot(store: DocumentStore, collection: str) -> dict[str, Any]:
    """Every document and chunk as stored: ids, texts and metadata."""
    docs = store.documents(collection)
    return {
        "documents": sorted((d.doc_id, d.name, d.pages, d.chunks) for d in docs),
        "chunks": sorted(
            (c.id, c.text, c.name, tuple(c.pages), c.section, repr(c.boxes))
            for d in docs
            for c in store.chunks_of(collection, d.doc_id)
        ),
    }


def vectors(store: DocumentStore, chroma_name: str) -> dict[str, np.ndarray]:
    got = store._client.get_collection(chroma_name).get(include=["embeddings"])
    return {i: np.asarray(v) for i, v in zip(got["ids"], got["embeddings"], strict=True)}


@dataclass
class Collection:
    services: Services
    name: str
    root: Path


@pytest.fixture(scope="module")
def collection(
    tmp_path_factory: pytest.TempPathFactory, shared_cache: Path
) -> Iterator[Collection]:
    """One collection for the module: each test leaves it as it found it, but the last (keep)."""
    root = tmp_path_factory.mktemp("adapt")
    services = Services(clean_settings(root, shared_cache))
    try:
        pdf = faq_pages(root / "faq-part.pdf")
        report = services.ingestor().ingest([pdf], "faq")
        assert [r.status for r in report.results] == ["added"], report.to_dict()
        yield Collection(services, "faq", root)
    finally:
        services.close()


def test_held_out_passages_are_never_trained_on() -> None:
    questions = [
        Question(f"q{i} {j}", f"chunk-{i}", "a.pdf", i + 1) for i in range(40) for j in (0, 1)
    ]
    pairs = split(questions, 0.25)
    trained = {q.chunk_id for q in pairs.train}
    held = {q.chunk_id for q in pairs.held_out}
    assert not trained & held
    assert 4 <= len(held) <= 16 and len(pairs.held_out) == 2 * len(held)
    assert split(questions[:20], 0.25).held_out == [q for q in questions[:20] if q.chunk_id in held]
    twice = [*questions, Question(pairs.held_out[0].question.upper(), "chunk-x", "a.pdf", 1)]
    assert pairs.held_out[0].question.upper() not in {q.question for q in split(twice, 0.25).train}


def test_cancel_during_training_leaves_nothing_behind(collection: Collection) -> None:
    services, name = collection.services, collection.name
    store = services.store
    before = snapshot(store, name)
    chroma = {c.name for c in store._client.list_collections()}
    training = threading.Event()

    def follow(stage: str, done: int, total: int) -> None:
        if stage == "train":
            training.set()

    with pytest.raises(AdaptCancelled):
        run(
            services,
            name,
            questions="sentences",
            options=AdaptOptions(steps=200, batch_size=4, max_passages=24),
            progress=follow,
            should_stop=training.is_set,
        )
    assert pending(store, name) is None
    assert not list((store.folder / "embedders").glob("*"))
    assert {c.name for c in store._client.list_collections()} == chroma
    assert snapshot(store, name) == before and store.collection(name).embedder is None


def test_cli_adapt_later_then_discard_restores_the_collection(
    collection: Collection, shared_cache: Path
) -> None:
    services, name, root = collection.services, collection.name, collection.root
    before = snapshot(services.store, name)
    chroma = services.store.collection(name).chroma_name
    all_vectors = {c.name for c in services.store._client.list_collections()}
    services.close()  # the CLI takes the store's writer lock
    env = clean_cli_env(root, shared_cache)

    def cli(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "localllm.cli", *args, "--collection", name, "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    adapted = cli(
        "adapt-embedder",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--questions",
        "sentences",
        "--max-passages",
        "16",
        "--later",
    )
    assert adapted["state"] == "pending"
    assert adapted["before"].keys() == adapted["after"].keys() == {"hit1", "hit5", "hit10", "mrr"}
    shown = cli("embedder", "show")
    assert shown["adapted"] is False and shown["pending"]["run"] == adapted["run"]
    discarded = cli("embedder", "discard")
    assert discarded["state"] == "discarded"
    store = DocumentStore(root / "docs_store")
    try:
        assert (
            store.collection(name).chroma_name == chroma and store.collection(name).embedder is None
        )
        assert snapshot(store, name) == before
        assert not (store.folder / adapted["embedder"]).exists()
        assert {c.name for c in store._client.list_collections()} == all_vectors
    finally:
        store.close()
    again = subprocess.run(
        [sys.executable, "-m", "localllm.cli", "embedder", "keep", "--collection", name],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert again.returncode == 1 and "no adapted embedder waiting" in again.stderr


def test_unknown_collection_and_bad_options_are_clear_errors(collection: Collection) -> None:
    with pytest.raises(StoreError, match="no collection named 'nope'"):
        run(collection.services, "nope", questions="sentences", options=QUICK)
    with pytest.raises(AdaptError, match="at least 2 pairs"):
        run(collection.services, collection.name, options=AdaptOptions(batch_size=1))
    with pytest.raises(AdaptError, match="no adapted embedder waiting"):
        decide(collection.services, collection.name, "keep")


def test_adapt_keep_reembeds_every_chunk_and_search_uses_the_new_embedder(
    collection: Collection,
) -> None:
    services, name = collection.services, collection.name
    store = services.store
    before = snapshot(store, name)
    old_chroma = store.collection(name).chroma_name
    old_vectors = vectors(store, old_chroma)
    stages: list[str] = []

    record = run(
        services, name, questions="model", options=QUICK, progress=lambda s, d, t: stages.append(s)
    )

    assert {"questions", "before", "train", "embed", "after"} <= set(stages)
    assert record.state == "pending" and record.pairs["train"] >= 4 and record.pairs["held_out"]
    assert set(record.before) >= {"hit1", "hit5"} and set(record.after) >= {"hit1", "hit5"}
    assert record.backend in ("onnx-int8", "onnx")  # the accelerated embedder was built
    folder = store.folder / "embedders" / record.run
    trained = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    held_out = read_questions(folder / "held_out.jsonl")
    assert not {q.question for q in held_out} & {t["question"] for t in trained}
    assert not {q.chunk_id for q in held_out} & {t["chunk_id"] for t in trained}
    # until kept, nothing about the collection changed
    assert (
        store.collection(name).chroma_name == old_chroma and store.collection(name).embedder is None
    )

    kept = decide(services, name, "keep")

    info = store.collection(name)
    assert (
        kept.state == "kept" and info.embedder == record.model and info.chroma_name == record.shadow
    )
    assert snapshot(store, name) == before
    new_vectors = vectors(store, info.chroma_name)
    assert new_vectors.keys() == old_vectors.keys()
    changed = [float(np.dot(old_vectors[i], new_vectors[i])) for i in old_vectors]
    assert max(changed) < 0.9999, "the adapted embedder gives the same vectors"
    from chromadb.errors import NotFoundError

    with pytest.raises(NotFoundError):
        store._client.get_collection(old_chroma)
    tuned = services.embedder.for_collection(store, name)
    assert tuned is not services.embedder
    assert tuned.model_path == (store.folder / record.model).resolve()
    hits = (
        Retriever(store, services.embedder)
        .search("What is Debian GNU/Linux?", name, k=5, mode="vector")
        .hits
    )
    assert hits
    query = tuned.embed_query("What is Debian GNU/Linux?")
    assert hits[0].similarity == pytest.approx(
        float(np.dot(query, new_vectors[hits[0].chunk.id])), abs=1e-3
    )
    # a document added now is embedded by the collection's own embedder
    note = collection.root / "note.md"
    note.write_text("# Mirrors\n\n" + "Debian mirrors copy the archive every six hours. " * 8)
    assert not services.ingestor().ingest([note], name).failed
    added = store.find(name, name="note.md")[0]
    stored = store.chunks_of(name, added.doc_id)[0]
    from localllm.documents.chunk import search_text

    expected = tuned.embed([search_text(stored.text, stored.section)])[0]
    assert float(np.dot(expected, vectors(store, info.chroma_name)[stored.id])) > 0.999


def test_the_documents_tab_adapts_measures_and_discards(
    running_app: RunningApp, tmp_path: Path
) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(running_app.url, verbose=False)
    pdf = faq_pages(tmp_path / "faq-part.pdf")
    status, *_ = client.predict([handle_file(str(pdf))], [], "adapt-tab", False, api_name="/ingest")
    assert "1 added" in status, status
    # the job's id (a State) and the Keep / Discard buttons are no part of the API's answer
    status, scores = client.predict("adapt-tab", 10, "sentences", api_name="/adapt_embedder")
    assert "waiting" in status, status
    assert [row[0] for row in scores["data"]] == ["current", "adapted"]
    assert all(0.0 <= value <= 1.0 for row in scores["data"] for value in row[1:])
    status, scores = client.predict("adapt-tab", api_name="/discard_embedder")
    assert status.startswith("Discarded") and "the app's embedder" in status, status
    assert [row[0] for row in scores["data"]] == ["current", "adapted"]  # what was discarded
    with pytest.raises(AppError, match="no adapted embedder waiting"):
        client.predict("adapt-tab", api_name="/keep_embedder")


def test_a_base_share_moves_the_tuned_weights_that_far_back_to_the_base() -> None:
    """WiSE-FT (the default share 0.5): every weight halfway between the tuned and the bundled."""
    import torch
    from sentence_transformers import SentenceTransformer

    from localllm.index.adapt_train import blend_with_base
    from localllm.index.embed import bundled_embedder_path

    base = bundled_embedder_path()
    require(base is not None, "the bundled embedder package is not installed")
    model = SentenceTransformer(str(base), device="cpu", local_files_only=True)
    original = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(1.0)  # as if training had moved every weight by 1
    blend_with_base(model, str(base), AdaptOptions().base_share)
    blended = model.state_dict()
    assert AdaptOptions().base_share == 0.5
    for name, value in original.items():
        assert torch.allclose(blended[name], value + 0.5, atol=1e-5), name
