"""Ingestion end to end on real PDFs: real parser, real embedder, real Chroma on disk, real CLI."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from localllm.config import Settings
from localllm.index.jobs import IngestJob
from localllm.services import Services
from tests.conftest import cli_env, run_cli
from tests.corpus import CORPUS, corpus_file, write_encrypted_pdf
from tests.rag_fixtures import clean_settings
from tests.store_helpers import nearest_chunks

FAQ = CORPUS / "debian-faq.en.pdf"

# Sentences the Debian FAQ's own authors answer on these (1-based) pages (../shared/eval/dev_qa.jsonl).
KNOWN = [
    ("Debian ships both gnash and swfdec: two free SWF movie players.", 28),
    ("Conffiles is a list of configuration files (usually placed in /etc)", 37),
    ("There are three ways of holding back packages, with dpkg, apt or aptitude.", 40),
]


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.fixture(scope="module")
def faq_services(
    tmp_path_factory: pytest.TempPathFactory, shared_cache: Path
) -> Iterator[Services]:
    corpus_file(FAQ.name)
    root = tmp_path_factory.mktemp("ingest")
    services = Services(clean_settings(root, shared_cache))
    report = services.ingestor().ingest([FAQ], "faq")
    assert [r.status for r in report.results] == ["added"], report.to_dict()
    yield services
    services.close()


def test_each_chunk_cites_the_page_its_text_is_on(faq_services: Services) -> None:
    store = faq_services.store
    doc = store.documents("faq")[0]
    assert doc.name == FAQ.name and doc.pages == 73 and doc.chunks > 50
    chunks = store.chunks_of("faq", doc.doc_id)
    assert len(chunks) == doc.chunks
    for sentence, page in KNOWN:
        holding = [c for c in chunks if squash(sentence) in squash(c.text)]
        assert holding, f"no chunk holds {sentence!r}"
        assert all(page in c.pages for c in holding), (page, [c.pages for c in holding])
        hit = nearest_chunks(store, "faq", faq_services.embedder.embed_query(sentence), k=1)[0]
        assert page in hit.pages and squash(sentence) in squash(hit.text)
        assert any(p == page for p, _ in hit.boxes), "the chunk's boxes locate it on its page"


def test_reingest_is_a_noop_and_a_changed_file_replaces(
    faq_services: Services, tmp_path: Path
) -> None:
    store = faq_services.store
    before = store.count_chunks("faq")
    again = faq_services.ingestor().ingest([FAQ], "faq")
    assert [r.status for r in again.results] == ["unchanged"]
    assert store.count_chunks("faq") == before

    notes = tmp_path / "notes.md"
    notes.write_text("# Release plan\n\nThe orange submarine leaves the harbour on Tuesday.\n")
    assert faq_services.ingestor().ingest([notes], "faq").results[0].status == "added"
    notes.write_text("# Release plan\n\nThe purple zeppelin lands at the airfield on Friday.\n")
    changed = faq_services.ingestor().ingest([notes], "faq")
    assert changed.results[0].status == "replaced"
    versions = [d for d in store.documents("faq") if d.name == "notes.md"]
    assert len(versions) == 1
    texts = " ".join(c.text for c in store.chunks_of("faq", versions[0].doc_id))
    assert "zeppelin" in texts and "submarine" not in texts
    hits = nearest_chunks(
        store, "faq", faq_services.embedder.embed_query("orange submarine harbour"), k=50
    )
    assert all("submarine" not in h.text for h in hits), "the old version's chunks are gone"
    assert store.count_chunks("faq") == before + versions[0].chunks


def test_bad_files_fail_one_by_one_and_the_good_one_is_indexed(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    good = batch / "good \u2013 \u201cquoted\u201d \u00e9 $x.pdf"
    shutil.copy(corpus_file("debian-faq.en.pdf"), good)
    write_encrypted_pdf(batch / "encrypted.pdf", "Top secret minutes.", "secret")
    (batch / "truncated.pdf").write_bytes(corpus_file("R-intro.pdf").read_bytes()[:30000])
    (batch / "empty.pdf").write_bytes(b"")
    (batch / "program.pdf").write_bytes(Path("/bin/ls").read_bytes())
    (batch / "notes.xyz").write_text("hello")
    shutil.copy(corpus_file("congress.pdf"), batch / "scanned.pdf")

    env = cli_env(
        LOCALLLM_DOCS_STORE=str(tmp_path / "store"),
        LOCALLLM_MODELS_DIR=str(tmp_path / "models"),
        LOCALLLM_OCR="false",
    )
    files = sorted(str(p) for p in batch.iterdir())
    result = run_cli("ingest", *files, "--json", "--quiet", env=env, timeout=600)
    assert result.returncode == 1, result.stderr
    payload = json.loads(result.stdout)
    by_name = {f["name"]: f for f in payload["files"]}
    assert by_name[good.name]["status"] == "added" and by_name[good.name]["chunks"] > 50
    failed = {name for name, f in by_name.items() if f["status"] == "failed"}
    assert failed == {
        "encrypted.pdf",
        "truncated.pdf",
        "empty.pdf",
        "program.pdf",
        "notes.xyz",
        "scanned.pdf",
    }
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("failed: ")]
    assert len(lines) == 6, result.stderr
    for name in failed:
        assert any(name in ln for ln in lines), name
    assert any(
        "password" in ln.lower() or "encrypted" in ln.lower()
        for ln in lines
        if "encrypted.pdf" in ln
    )
    assert any("OCR" in ln or "tesseract" in ln for ln in lines if "scanned.pdf" in ln)

    listing = run_cli("docs", "--json", env=env)
    assert [d["name"] for d in json.loads(listing.stdout)["documents"]] == [good.name]
    removed = run_cli("docs", "rm", good.name, env=env)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(run_cli("docs", "--json", env=env).stdout)["documents"] == []

    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nKeep the lighthouse lamp trimmed.\n")
    assert run_cli("ingest", str(notes), "--collection", "Team notes", env=env).returncode == 0
    assert run_cli("docs", "--collection", "Team notes", env=env).stdout.count("notes.md") == 1
    dropped = run_cli("docs", "rm-collection", "Team notes", env=env)
    assert dropped.returncode == 0, dropped.stderr
    gone = run_cli("docs", "--collection", "Team notes", env=env)
    assert gone.returncode == 1 and "no collection named 'Team notes'" in gone.stderr


def test_cancel_leaves_no_half_document(tmp_path: Path) -> None:
    services = Services(
        Settings(models_dir=tmp_path / "m", docs_store=tmp_path / "s", runs_dir=tmp_path / "r")
    )
    try:
        job = IngestJob(services.ingestor(), [corpus_file("R-intro.pdf"), FAQ], "c", None).start()
        while job.progress is None or job.progress.stage != "embed":
            assert not job.done, job.error
            job.wait(0.05)
        job.cancel()
        assert job.wait(120)
        assert job.report is not None and job.error is None
        assert [r.status for r in job.report.results] == ["cancelled", "cancelled"]
        assert services.store.documents("c") == []
        assert services.store.count_chunks("c") == 0
    finally:
        services.close()
