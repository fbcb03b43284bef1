"""Offline proof: the app's work done in a process that has no network at all (`unshare -n`)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env, require

pytestmark = pytest.mark.network_free

SHIM_SOURCE = Path(__file__).parent / "native" / "resolve_log.c"


@pytest.fixture(scope="session")
def resolve_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LD_PRELOAD library that logs every host name looked up, to the file in RESOLVE_LOG.

    A lookup fails in the namespace anyway, so only a log shows native code that tries one.
    """
    require(shutil.which("gcc") is not None, "gcc builds the LD_PRELOAD shim that logs lookups")
    shim = tmp_path_factory.mktemp("shim") / "resolve_log.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(SHIM_SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    return shim


@dataclass
class Watched:
    """A subprocess environment that logs host-name lookups and has its own empty HOME."""

    shim: Path
    log: Path
    home: Path

    def env(self, env: dict[str, str]) -> dict[str, str]:
        self.home.mkdir(exist_ok=True)
        return {
            **env,
            "LD_PRELOAD": str(self.shim),
            "RESOLVE_LOG": str(self.log),
            "HOME": str(self.home),
        }

    def assert_nothing_phoned_home(self) -> None:
        names = self.log.read_text().split() if self.log.exists() else []
        looked_up = sorted({n for n in names if n != "localhost" and not _is_ip(n)})
        assert not looked_up, f"host names looked up with no network: {looked_up}"
        # onnxruntime's telemetry leaves a device id and a database here
        microsoft = self.home / ".cache" / "Microsoft"
        left = sorted(str(p.relative_to(self.home)) for p in microsoft.rglob("*"))
        assert not microsoft.exists(), f"telemetry files written under HOME: {left}"


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@pytest.fixture
def watched(resolve_shim: Path, tmp_path: Path) -> Watched:
    return Watched(resolve_shim, tmp_path / "resolved.log", tmp_path / "home")


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def run_without_network(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    require(_unshare_works(), "`unshare -n` needs root (or user namespaces) on this machine")
    return subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "localllm.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=ROOT,
    )


def test_no_network_in_the_namespace(tmp_path: Path) -> None:
    require(_unshare_works(), "`unshare -n` needs root (or user namespaces) on this machine")
    probe = "import socket; socket.create_connection(('1.1.1.1', 443), timeout=3)"
    result = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", probe], capture_output=True, text=True
    )
    assert result.returncode != 0, "the namespace must really have no network"


def test_chat_answers_with_no_network(tmp_path: Path, watched: Watched) -> None:
    env = watched.env(cli_env(LOCALLLM_MODELS_DIR=str(tmp_path / "models")))
    result = run_without_network(
        "chat", "What is the capital of France?", "--json", "--max-tokens", "24", env=env
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"].strip()
    watched.assert_nothing_phoned_home()


def test_models_listing_with_no_network(tmp_path: Path) -> None:
    env = cli_env(LOCALLLM_MODELS_DIR=str(tmp_path / "models"))
    result = run_without_network("models", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert any(m["bundled"] for m in json.loads(result.stdout)["models"])


def test_opted_in_download_with_no_network_says_so(tmp_path: Path) -> None:
    env = cli_env(LOCALLLM_MODELS_DIR=str(tmp_path / "models"), LOCALLLM_ALLOW_DOWNLOADS="1")
    env.pop("HF_HUB_OFFLINE", None)
    result = run_without_network("download", "owner/repo", "model.Q4_K_M.gguf", env=env)
    assert result.returncode == 1
    assert "could not reach the Hub" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "models").glob("*.gguf"))


# Privacy first, as `localllm serve` does: huggingface_hub (which gradio_client imports) reads
# HF_HUB_OFFLINE and HF_HUB_DISABLE_TELEMETRY once, at import.
APP_IN_NAMESPACE = """
import sys, urllib.request
from localllm.config import Settings
from localllm.privacy import apply_privacy
settings = Settings(models_dir=sys.argv[1], max_tokens=16)
apply_privacy(settings)
from gradio_client import Client
from localllm.server.launch import launch
demo, services = launch(settings, host="127.0.0.1", port=int(sys.argv[2]), block=False)
url = f"http://127.0.0.1:{sys.argv[2]}/"
assert urllib.request.urlopen(url, timeout=10).status == 200
result = Client(url, verbose=False).predict("Say hi.", api_name="/chat")
print("ANSWER:", result[0][-1]["content"])
demo.close()
"""


def test_the_web_app_serves_and_answers_with_no_network(tmp_path: Path, watched: Watched) -> None:
    require(_unshare_works(), "`unshare -n` needs root (or user namespaces) on this machine")
    require(shutil.which("ip") is not None, "iproute2's `ip` brings loopback up in the namespace")
    script = tmp_path / "app_offline.py"
    script.write_text(APP_IN_NAMESPACE)
    env = watched.env(cli_env())
    command = f"ip link set lo up && exec {sys.executable} {script} {tmp_path / 'models'} 7899"
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", command],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ANSWER:" in result.stdout
    watched.assert_nothing_phoned_home()


def test_ingest_search_and_ask_with_no_network(tmp_path: Path, watched: Watched) -> None:
    env = cli_env(
        LOCALLLM_MODELS_DIR=str(tmp_path / "models"),
        LOCALLLM_DOCS_STORE=str(tmp_path / "docs_store"),
        LOCALLLM_CONVERSATIONS_PATH=str(tmp_path / "conversations.sqlite3"),
        LOCALLLM_EMBED_BACKEND="onnx-int8",  # the accelerated embedder, in ONNX Runtime
    )
    env = watched.env(env)
    notes = tmp_path / "notes.md"
    notes.write_text("# Garden\n\nThe heron nests by the north pond every spring.\n")
    ingested = run_without_network("ingest", str(notes), "--json", env=env)
    assert ingested.returncode == 0, ingested.stderr
    found = run_without_network("search", "where does the heron nest", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert "north pond" in json.loads(found.stdout)[0]["text"]
    asked = run_without_network(
        "ask", "Where does the heron nest?", "--json", "--max-tokens", "24", env=env
    )
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["sources"][0]["file"] == "notes.md"
    assert list(Path(env["LOCALLLM_CACHE_DIR"]).rglob("*.onnx-int8.onnx")), (
        "no ONNX file: not the ONNX path"
    )
    watched.assert_nothing_phoned_home()
