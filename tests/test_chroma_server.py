"""The document store on a real Chroma server (LOCALLLM_CHROMA_URL): `chroma run` on loopback, the
same ingest, search and delete as the embedded store, and a server that goes away and comes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import chromadb
import pytest

from localllm.config import Settings
from localllm.errors import LocalLLMError, StoreError
from localllm.index.catalog import chroma_name_for
from localllm.index.chroma_server import server_address
from localllm.index.store import DocumentStore
from localllm.services import Services
from tests.conftest import free_port, require, run_cli
from tests.rag_fixtures import FAQ_NAME, HOLD_PAGE, HOLD_QUESTION, clean_cli_env, clean_settings

CHROMA = Path(sys.executable).parent / "chroma"  # the chromadb package's command
NOTE = """# Heron maintenance

The heron calibration wheel must be greased with lanolin every fortnight.
Use only the brass spanner on the heron's hexagonal bolts.
"""
OTHER = """# Garden pond

The pond pump is cleaned in spring, and the lilies are divided every third year.
"""


class ChromaServer:
    """`chroma run` on a loopback port, its data in `path`; stop() and start() keep both."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = path.parent / f"chroma-{port}.log"

    def start(self) -> None:
        require(CHROMA.is_file(), f"{CHROMA} (from the chromadb package) is missing")
        address = ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(CHROMA), "run", "--path", str(self.path), *address],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
            )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:  # e.g. the port is taken: never talk to another server
                raise RuntimeError(f"chroma exited: {self.log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"chroma did not start: {self.log.read_text(errors='replace')}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.proc = None

    def size(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def collections(self) -> dict[str, int]:
        """Names and sizes of the server's collections, seen by a client of its own."""
        client = chromadb.HttpClient(
            host="127.0.0.1",
            port=self.port,
            settings=chromadb.Settings(anonymized_telemetry=False),
        )
        try:
            return {c.name: c.count() for c in client.list_collections()}
        finally:
            client.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChromaServer]:
    running = ChromaServer(tmp_path / "chroma-server", free_port())
    running.start()
    yield running
    running.stop()


@pytest.fixture
def services(tmp_path: Path, shared_cache: Path, server: ChromaServer) -> Iterator[Services]:
    app = Services(clean_settings(tmp_path / "app", shared_cache, chroma_url=server.url))
    yield app
    app.close()


def names(services: Services, query: str, collection: str = "notes") -> list[str]:
    result = services.retriever().search(query, collection, k=5)
    return [h.chunk.name for h in result.hits]


def test_server_url_parsing() -> None:
    assert server_address("http://127.0.0.1:8000") == ("127.0.0.1", 8000, False)
    assert server_address("https://chroma.example.org/") == ("chroma.example.org", 443, True)
    assert server_address("http://chroma") == ("chroma", 8000, False)
    for bad in (
        "127.0.0.1:8000",
        "ftp://host:8000",
        "http://:8000",
        "http://h:99999",
        "http://h/x",
    ):
        with pytest.raises(StoreError):
            server_address(bad)
    settings = Settings(chroma_url="http://127.0.0.1:8000")
    assert settings.chroma_url == "http://127.0.0.1:8000"


def test_ingest_search_delete_on_the_server(
    services: Services, server: ChromaServer, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "heron.md").write_text(NOTE)
    (docs / "pond.md").write_text(OTHER)
    before = server.size()
    report = services.ingestor().ingest([docs], "notes")
    assert report.to_dict()["counts"] == {"added": 2}, report.to_dict()

    assert names(services, "how often is the calibration wheel greased?")[0] == "heron.md"
    assert names(services, "when is the pond pump cleaned")[0] == "pond.md"
    store = services.store
    assert store.chroma_url == server.url
    assert not (store.folder / "chroma").exists(), "no embedded Chroma beside a server"
    assert (store.folder / "catalog.sqlite3").is_file()  # the catalog and BM25 stay local

    # The vectors are on the server: its folder grew, and a client of its own sees them.
    assert server.size() > before
    on_server = server.collections()
    ours = [n for n in on_server if n.startswith(chroma_name_for("notes"))]
    assert len(ours) == 1 and on_server[ours[0]] == store.count_chunks("notes") >= 2, on_server

    store.delete_document("notes", "heron.md")
    assert "heron.md" not in names(services, "how often is the calibration wheel greased?")
    assert [d.name for d in store.documents("notes")] == ["pond.md"]
    assert server.collections()[ours[0]] == store.count_chunks("notes")


def test_server_down_and_back(services: Services, server: ChromaServer, tmp_path: Path) -> None:
    (tmp_path / "heron.md").write_text(NOTE)
    (tmp_path / "pond.md").write_text(OTHER)
    services.ingestor().ingest([tmp_path / "heron.md"], "notes")
    question = "how often is the calibration wheel greased?"
    assert names(services, question)[0] == "heron.md"
    store = services.store

    server.stop()
    # An ingest while the server is down fails for that file; its half-stored rest is undone later.
    report = services.ingestor().ingest([tmp_path / "pond.md"], "notes")
    assert report.to_dict()["counts"] == {"failed": 1}
    assert server.url in (report.results[0].error or "")
    assert [d.name for d in store.catalog.documents("notes", status="indexing")] == ["pond.md"]
    with pytest.raises(LocalLLMError) as raised:
        services.retriever().search(question, "notes")
    assert isinstance(raised.value, StoreError)
    assert f"the Chroma server at {server.url} is not reachable" in str(raised.value)
    assert [d.name for d in store.documents("notes")] == ["heron.md"], "the catalog still answers"
    with pytest.raises(StoreError, match="not reachable"):
        services.ingestor().ingest([tmp_path / "pond.md"], "notes")

    server.start()
    assert services.store is store, "the same open store, not a new one"
    assert names(services, question)[0] == "heron.md"
    report = services.ingestor().ingest([tmp_path / "pond.md"], "notes")
    assert report.to_dict()["counts"] == {"added": 1}, report.to_dict()
    assert names(services, "when is the pond pump cleaned")[0] == "pond.md"
    assert sorted(d.status for d in store.catalog.documents("notes", status=None)) == ["ready"] * 2


def test_server_down_when_the_store_opens(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(StoreError, match=f"the Chroma server at {url} is not reachable"):
        DocumentStore(tmp_path / "docs_store", chroma_url=url)
    server = ChromaServer(tmp_path / "chroma-server", port)
    server.start()
    try:  # the failed open left no lock behind: this process opens the store once it is up
        store = DocumentStore(tmp_path / "docs_store", chroma_url=url + "/")
        assert store.chroma_url == url
        store.ensure_collection("notes")
        store.close()
    finally:
        server.stop()


def test_collections_of_two_apps_on_one_server_stay_apart(
    server: ChromaServer, tmp_path: Path
) -> None:
    one = DocumentStore(tmp_path / "one", chroma_url=server.url)
    two = DocumentStore(tmp_path / "two", chroma_url=server.url)
    try:
        one.ensure_collection("default")
        two.ensure_collection("default")
        two.delete_collection("default")
        assert one.count_chunks("default") == 0  # still there
        assert len(server.collections()) == 1
    finally:
        one.close()
        two.close()


def test_cli_ingest_and_search_on_the_server(
    server: ChromaServer, tmp_path: Path, shared_cache: Path
) -> None:
    from tests.corpus import corpus_file

    faq = corpus_file(FAQ_NAME)
    env = clean_cli_env(tmp_path / "cli", shared_cache, LOCALLLM_CHROMA_URL=server.url)
    ingest = run_cli("ingest", str(faq), "--collection", "faq", "--quiet", "--json", env=env)
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["counts"] == {"added": 1}
    assert any(n.startswith(chroma_name_for("faq")) for n in server.collections())

    search = run_cli("search", HOLD_QUESTION, "--collection", "faq", "--json", env=env)
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)
    assert hits and all(h["file"] == FAQ_NAME for h in hits)
    assert any(HOLD_PAGE in h["pages"] for h in hits[:3]), [h["pages"] for h in hits]

    server.stop()
    down = run_cli("search", HOLD_QUESTION, "--collection", "faq", "--json", env=env)
    assert down.returncode != 0 and "Traceback" not in down.stderr, down.stderr
    assert f"the Chroma server at {server.url} is not reachable" in down.stderr
