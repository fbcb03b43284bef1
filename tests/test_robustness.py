"""Damaged and hostile documents fail with one clear line each, and take nothing stored with them.

A small sample of what bench/robustness.py runs in hundreds: hypothesis-driven mutations of real
corpus PDFs and of Office files, and the named hostile cases (a zip bomb, absurd page counts, deep
nesting, a program or HTML named .pdf).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from localllm.documents.isolated import parse_isolated
from localllm.documents.model import DocumentError
from localllm.documents.parse import ParseCancelled, parse_file
from tests.conftest import ROOT, RunningApp, cli_env, require, run_cli
from tests.corpus import corpus_file
from tests.mutations import Sample, hostile, mutated, seeds

POOL = seeds(("congress.pdf", "ocrmypdf-multipage.pdf", "debian-faq.en.pdf"))


def one_clear_line(sample: Sample, folder: Path) -> str | None:
    """Parse `sample`: None when it parsed, else its error, which must be one line naming it."""
    path = folder / sample.name
    path.write_bytes(sample.data)
    try:
        parse_file(path, ocr=False)
    except DocumentError as e:
        message = str(e)
        assert message.startswith(sample.name), (sample.how, message)
        assert "\n" not in message and "Traceback" not in message, (sample.how, message)
        assert str(folder) not in message, f"a temp path leaked: {message}"
        return message
    return None


@given(mutated(POOL))
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_damaged_documents_parse_or_fail_with_one_clear_line(sample: Sample) -> None:
    corpus_file("debian-faq.en.pdf")
    with tempfile.TemporaryDirectory() as folder:
        one_clear_line(sample, Path(folder))  # any other exception fails the example


@pytest.mark.parametrize("sample", hostile(bomb_size=1 << 30), ids=lambda s: s.name)
def test_hostile_documents_are_refused(sample: Sample, tmp_path: Path) -> None:
    message = one_clear_line(sample, tmp_path)
    assert message is not None, f"{sample.how} was accepted"
    if "bomb" in sample.name:
        assert "refused without unpacking it" in message


def test_a_batch_of_damaged_files_keeps_the_good_ones_and_the_store(tmp_path: Path) -> None:
    env = cli_env(
        LOCALLLM_DOCS_STORE=str(tmp_path / "store"),
        LOCALLLM_MODELS_DIR=str(tmp_path / "models"),
    )
    earlier = tmp_path / "earlier.md"
    earlier.write_text("# Garden\n\nThe heron nests by the north pond every spring.\n")
    first = run_cli("ingest", str(earlier), "--json", env=env)
    assert first.returncode == 0, first.stderr

    batch = tmp_path / "batch"
    batch.mkdir()
    bad = hostile(bomb_size=1 << 28)
    for sample in bad:
        (batch / sample.name).write_bytes(sample.data)
    good = batch / "ferries.md"
    good.write_text("# Ferries\n\nThe morning ferry leaves the harbour at 7:15 on weekdays.\n")
    result = run_cli("ingest", str(batch), "--json", env=env, timeout=300)
    report = json.loads(result.stdout)
    by_name = {r["name"]: r for r in report["files"]}
    assert by_name["ferries.md"]["status"] == "added"
    for sample in bad:
        entry = by_name[sample.name]
        assert entry["status"] == "failed", (sample.how, entry)
        assert entry["error"].count("\n") == 0 and "Traceback" not in result.stderr
    for question, expected in (("where does the heron nest", "north pond"), ("ferry", "7:15")):
        found = run_cli("search", question, "--json", env=env)
        assert found.returncode == 0, found.stderr
        assert expected in json.loads(found.stdout)[0]["text"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MB file system of its own (tmpfs; mounting needs root, which CI has)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], capture_output=True
    )
    require(mounted.returncode == 0, "mounting a small tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_refuses_the_document_and_keeps_the_store(
    small_disk: Path, tmp_path: Path
) -> None:
    env = cli_env(
        LOCALLLM_DOCS_STORE=str(small_disk / "store"),
        LOCALLLM_MODELS_DIR=str(tmp_path / "models"),
    )
    earlier = tmp_path / "earlier.md"
    earlier.write_text("# Garden\n\nThe heron nests by the north pond every spring.\n")
    assert run_cli("ingest", str(earlier), "--json", env=env).returncode == 0
    # R-intro's ~570 passages need more than the ~39 MB left: refused before it is embedded
    result = run_cli("ingest", str(corpus_file("R-intro.pdf")), "--json", env=env, timeout=300)
    entry = json.loads(result.stdout)["files"][0]
    assert entry["status"] == "failed", entry
    assert "not enough disk space" in entry["error"] and "MB free" in entry["error"]
    assert "Traceback" not in result.stderr
    listed = json.loads(run_cli("docs", "--json", env=env).stdout)["documents"]
    assert [d["name"] for d in listed] == ["earlier.md"]
    found = run_cli("search", "where does the heron nest", "--json", env=env)
    assert "north pond" in json.loads(found.stdout)[0]["text"]


def test_a_reader_that_hangs_is_stopped_and_the_next_file_is_read(tmp_path: Path) -> None:
    stuck = tmp_path / "stuck.txt"
    os.mkfifo(stuck)  # opening it waits for a writer that never comes: a reader hung for good
    with pytest.raises(DocumentError, match="made no progress for 2 s and was stopped"):
        parse_isolated(stuck, stall_seconds=2)
    good = tmp_path / "good.md"
    good.write_text("# Notes\n\nThe heron nests by the north pond.\n")
    assert "north pond" in parse_isolated(good).elements[-1].text


def test_where_there_is_no_worker_files_are_read_here_alike(tmp_path: Path) -> None:
    """The path of a platform without the worker (Windows): the same document, pages reported."""
    pdf = corpus_file("ocrmypdf-multipage.pdf")
    pages: list[tuple[int, int]] = []
    here = parse_isolated(pdf, ocr=False, isolate=False, on_page=lambda d, t: pages.append((d, t)))
    there = parse_isolated(pdf, ocr=False)
    assert [e.text for e in here.elements] == [e.text for e in there.elements]
    assert pages and pages[-1][0] == pages[-1][1]
    with pytest.raises(ParseCancelled):
        parse_isolated(pdf, ocr=False, isolate=False, should_stop=lambda: True)


def test_a_reader_that_needs_too_much_memory_is_stopped(tmp_path: Path) -> None:
    huge = tmp_path / "huge.txt"
    with huge.open("w") as f:
        for _ in range(300):
            f.write("a line of plain text that goes on and on\n" * 25_000)  # ~1 MB each
    with pytest.raises(
        DocumentError, match=r"huge\.txt: reading it needs more (memory|than the 200 MB)"
    ):
        parse_isolated(huge, memory_mb=200)
    good = tmp_path / "good.md"
    good.write_text("# Notes\n\nThe heron nests by the north pond.\n")
    assert "north pond" in parse_isolated(good).elements[-1].text


def test_a_pipe_given_to_ingest_fails_at_once(tmp_path: Path) -> None:
    env = cli_env(LOCALLLM_DOCS_STORE=str(tmp_path / "store"))
    pipe = tmp_path / "notes.md"
    os.mkfifo(pipe)
    result = run_cli("ingest", str(pipe), "--json", env=env, timeout=120)
    entry = json.loads(result.stdout)["files"][0]
    assert entry["status"] == "failed" and "not a regular file" in entry["error"]


TRAVERSALS = (
    "gradio_api/file=/etc/passwd",
    "gradio_api/file=../../../../etc/passwd",
    "gradio_api/file=%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "gradio_api/file={data}/docs_store/catalog.sqlite3",
    "gradio_api/file=docs_store/catalog.sqlite3",
    "gradio_api/file={data}/app.log",
    "assets/..%2f..%2f..%2f..%2fetc/passwd",
    "static/../../../../etc/passwd",
    "gradio_api/file={root}/localllm/config.py",
)


def test_no_route_serves_a_file_outside_what_the_app_shows(running_app: RunningApp) -> None:
    data = running_app.models_dir.parent
    for route in TRAVERSALS:
        url = running_app.url + route.format(data=data, root=ROOT)
        reply = httpx.get(url, timeout=30)
        assert reply.status_code in (403, 404), (route, reply.status_code)
        assert "root:" not in reply.text and "SQLite format" not in reply.text, route
        assert "class Settings" not in reply.text, route
