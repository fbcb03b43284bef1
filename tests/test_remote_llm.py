"""Generation on an OpenAI-compatible server (LOCALLLM_LLM_URL): a real `python -m llama_cpp.server`
with the bundled model, driven in process, through grounded answers and from the CLI; then the
server gone at start, gone mid-answer, and refusing a wrong API key."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localllm.errors import LocalLLMError, RemoteModelError
from localllm.llm.base import GenerationParams, Message
from localllm.llm.manager import ModelManager, params_from_settings
from localllm.llm.remote import RemoteChatModel
from localllm.services import Services
from tests.conftest import free_port, run_cli, serving
from tests.rag_fixtures import clean_cli_env, clean_settings

pytest.importorskip(
    "sse_starlette", reason="the server extra: pip install 'llama-cpp-python[server]'"
)

NOTE = """# Facility notes

The Quillmore reactor in building 7 is cooled with lemon juice, refilled every Tuesday.

Visitors sign in at the front desk before they enter the reactor hall.
"""
QUESTION = "What is the Quillmore reactor cooled with?"
SECRET = "s3cret-key-for-tests"
QUICK = GenerationParams(temperature=0.0, seed=0, max_tokens=24)
HELLO: list[Message] = [{"role": "user", "content": "Name three colours."}]


# `python -m llama_cpp.server`, with the same weight-repacking choice the app makes on this CPU
# (see localllm/llm/repacking.py: on some AMX CPUs llama.cpp's repacked kernels crash).
SERVER = """
import runpy
from localllm.llm.repacking import install
install()
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


class Server:
    def __init__(self, port: int, log: Path, *extra: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1"
        self.log_path = log
        self._log = log.open("w")
        from localllm.llm.catalog import bundled_model_path

        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVER,
                "--model",
                str(bundled_model_path()),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama_cpp.server did not start: {log.read_text()}")
            time.sleep(0.3)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # 401 with --api_key: up all the same
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(free_port(), tmp_path_factory.mktemp("server") / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path, server: Server) -> Path:
    """A data folder with one small note ingested in the collection `notes` (then let go, so a
    CLI subprocess may open the store)."""
    root = tmp_path_factory.mktemp("remote_rag")
    (root / "reactor.md").write_text(NOTE, encoding="utf-8")
    services = Services(clean_settings(root, shared_cache, llm_url=server.url))
    try:
        report = services.ingestor().ingest([root / "reactor.md"], "notes")
        assert not report.failed, report.to_dict()
    finally:
        services.close()
    return root


def test_a_remote_model_streams_in_pieces(
    server: Server, tmp_path: Path, shared_cache: Path
) -> None:
    settings = clean_settings(tmp_path, shared_cache, llm_url=server.url, context_size=2048)
    manager = ModelManager(settings)
    try:
        assert manager.describe_loaded() == f"No model loaded yet · remote: {server.url}"
        model = manager.get()  # "bundled" is not on the server: its first model
        assert isinstance(model, RemoteChatModel)
        assert model.name.endswith(".gguf") and model.context_length == 2048
        assert manager.get() is model, "the same model is reused"
        described = manager.describe_loaded()
        assert described.startswith(f"remote: {server.url} · model {model.name}")
        params = params_from_settings(settings, temperature=0.0, seed=0, max_tokens=32)
        pieces = list(model.stream_chat(HELLO, params))
        assert len(pieces) > 3 and "".join(pieces).strip()
        stats = model.last_stats
        assert stats.completion_tokens == len(pieces) and 0 < stats.prompt_tokens < 40
        assert stats.seconds_total >= stats.seconds_to_first_token > 0
        assert model.count_tokens("<|im_start|>user\nhello<|im_end|>") == 5, "the server counts"
        assert model.answer_budget(params) == 2048 - 32
        again = list(model.stream_chat(HELLO, params))
        # Greedy both times; the second reuses the server's cached prompt, so its logits come from
        # a different batch shape and a near tie far into the answer may break the other way.
        assert again[:12] == pieces[:12], "temperature 0 and a seed: the same answer"
        judge: list[Message] = [{"role": "user", "content": "Is Paris in France? Yes or No."}]
        yes, no = model.choice_logits(judge, ["Yes", "No"])
        assert -100 < yes <= 0 and -100 < no <= 0, "the reranker's judge gets log-probabilities"
    finally:
        manager.close()


def test_a_long_conversation_is_trimmed_to_the_context(
    server: Server, tmp_path: Path, shared_cache: Path
) -> None:
    # The server's context is 2048; told 256 (it cannot say), the client keeps prompts to that.
    settings = clean_settings(tmp_path, shared_cache, llm_url=server.url, context_size=256)
    manager = ModelManager(settings)
    try:
        model = manager.get()
        assert model.context_length == 256
        filler = "Tell me more about the weather in spring and the colour of the sky. " * 3
        history: list[Message] = [{"role": "system", "content": "Be brief."}]
        for _ in range(6):
            history.append({"role": "user", "content": filler})
            history.append({"role": "assistant", "content": "It is mild and blue."})
        history.append({"role": "user", "content": "Name three colours."})
        assert model.prompt_tokens(history) > 256
        text = "".join(model.stream_chat(history, QUICK))
        assert text.strip()
        assert model.last_stats.trimmed_messages > 0
        assert model.last_stats.prompt_tokens <= model.answer_budget(QUICK)
    finally:
        manager.close()


def test_a_grounded_answer_through_the_remote_model(
    notes: Path, shared_cache: Path, server: Server
) -> None:
    services = Services(clean_settings(notes, shared_cache, llm_url=server.url, context_size=2048))
    try:
        model = services.models.get()
        params = params_from_settings(services.settings, temperature=0.0, seed=0, max_tokens=48)
        answer = services.grounded().prepare(model, QUESTION, "notes", params)
        assert not answer.declined and answer.sources
        assert answer.sources[0].file == "reactor.md"
        assert model.prompt_tokens(answer.messages) <= model.answer_budget(params)
        text = "".join(answer.stream(model, params))
        assert text.strip() and text == answer.model_text
        assert answer.outcome == "answered" and answer.sources[0].cited, answer.text
        assert model.last_stats.completion_tokens > 0
    finally:
        services.close()


def test_the_cli_chats_and_asks_through_the_server(
    notes: Path, shared_cache: Path, server: Server
) -> None:
    env = clean_cli_env(notes, shared_cache, LOCALLLM_LLM_URL=server.url, LOCALLLM_MAX_TOKENS="24")
    import json

    chat = run_cli("chat", "Name three colours.", "--json", "--temperature", "0", env=env)
    assert chat.returncode == 0, chat.stderr
    payload = json.loads(chat.stdout.strip().splitlines()[-1])
    assert payload["answer"].strip() and payload["model"].endswith(".gguf")
    assert payload["completion_tokens"] > 0

    ask = run_cli("ask", QUESTION, "--collection", "notes", "--json", "--seed", "0", env=env)
    assert ask.returncode == 0, ask.stderr
    payload = json.loads(ask.stdout.strip().splitlines()[-1])
    assert payload["answer"].strip() and payload["declined"] is False
    assert [s["file"] for s in payload["sources"]][:1] == ["reactor.md"]


def test_a_server_that_is_down_is_named(tmp_path: Path, shared_cache: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    manager = ModelManager(clean_settings(tmp_path, shared_cache, llm_url=url))
    with pytest.raises(RemoteModelError, match="cannot be reached") as caught:
        manager.get()
    assert url in str(caught.value)
    assert manager.loaded is None and url in manager.describe_loaded()

    result = run_cli(
        "chat", "hello", env=clean_cli_env(tmp_path, shared_cache, LOCALLLM_LLM_URL=url)
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: the LLM server at {url} cannot be reached" in result.stderr


@pytest.mark.timeout(120)
def test_a_server_killed_mid_answer_is_an_error_then_a_new_one_is_used(
    tmp_path: Path, shared_cache: Path
) -> None:
    port = free_port()
    doomed = Server(port, tmp_path / "doomed.log")
    settings = clean_settings(tmp_path, shared_cache, llm_url=doomed.url, context_size=2048)
    manager = ModelManager(settings)
    try:
        model = manager.get()
        long = GenerationParams(temperature=0.0, seed=0, max_tokens=1500, repeat_penalty=1.0)
        ask: list[Message] = [{"role": "user", "content": "Count from 1 to 1000, one per line."}]
        pieces = model.stream_chat(ask, long)
        first = next(pieces)
        doomed.proc.kill()
        started = time.monotonic()
        with pytest.raises(RemoteModelError, match="broke off the answer") as caught:
            for _ in pieces:
                pass
        assert time.monotonic() - started < 30
        assert doomed.url in str(caught.value) and first
        with pytest.raises(LocalLLMError, match="cannot be reached"):
            list(model.stream_chat(HELLO, QUICK))

        revived = Server(port, tmp_path / "revived.log")  # the same address, a new process
        try:
            assert "".join(model.stream_chat(HELLO, QUICK)).strip(), "the next call reconnects"
        finally:
            revived.stop()
    finally:
        manager.close()
        doomed.stop()


def test_a_wrong_api_key_is_refused_without_showing_it(tmp_path: Path, shared_cache: Path) -> None:
    keyed = Server(free_port(), tmp_path / "keyed.log", "--api_key", SECRET)
    try:
        wrong = "not-the-" + SECRET
        for key, said in ((wrong, "refused the API key"), (None, "wants an API key")):
            settings = clean_settings(tmp_path, shared_cache, llm_url=keyed.url, llm_api_key=key)
            with pytest.raises(RemoteModelError, match=said) as caught:
                ModelManager(settings).get()
            message = str(caught.value)
            assert "HTTP 401" in message and keyed.url in message
            assert SECRET not in message and "LOCALLLM_LLM_API_KEY" in message

        env = clean_cli_env(tmp_path, shared_cache, LOCALLLM_LLM_URL=keyed.url)
        result = run_cli("chat", "hello", env={**env, "LOCALLLM_LLM_API_KEY": wrong})
        assert result.returncode == 1 and "HTTP 401" in result.stderr
        assert SECRET not in result.stderr + result.stdout

        settings = clean_settings(tmp_path, shared_cache, llm_url=keyed.url, llm_api_key=SECRET)
        manager = ModelManager(settings)
        try:
            assert "".join(manager.get().stream_chat(HELLO, QUICK)).strip()
        finally:
            manager.close()
    finally:
        keyed.stop()


def test_the_app_survives_its_llm_server_going_away(tmp_path: Path) -> None:
    """Through the running app's API: answers while the server is up, a clear error naming the
    server while it is down (the app keeps serving), answers again once it is back."""
    port = free_port()
    first = Server(port, tmp_path / "server1.log")
    try:
        with serving(tmp_path, LOCALLLM_LLM_URL=first.url) as (url, _log):
            api = url + "v1/chat/completions"
            body = json.dumps({"messages": HELLO, "max_tokens": 8}).encode()

            def ask() -> tuple[int, dict[str, Any]]:
                request = urllib.request.Request(
                    api, data=body, headers={"Content-Type": "application/json"}, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=120) as r:
                        return r.status, json.loads(r.read())
                except urllib.error.HTTPError as e:
                    return e.code, json.loads(e.read())

            status, reply = ask()
            assert status == 200 and reply["choices"][0]["message"]["content"].strip()
            first.stop()
            status, reply = ask()
            assert status >= 400 and f"127.0.0.1:{port}" in reply["error"]["message"]
            with urllib.request.urlopen(url + "v1/models", timeout=30) as r:
                assert r.status == 200, "the app itself keeps serving"
            second = Server(port, tmp_path / "server2.log")
            try:
                status, reply = ask()
                assert status == 200 and reply["choices"][0]["message"]["content"].strip()
            finally:
                second.stop()
    finally:
        first.stop()
