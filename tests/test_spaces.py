"""Hugging Face Spaces mode: `python app.py` with SPACE_ID set, as a Space starts it."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client

from localllm.errors import LocalLLMError
from localllm.server.spaces import spaces_model
from tests.conftest import cli_env, free_port
from tests.fake_hub import running_fake_hub

ROOT = Path(__file__).resolve().parents[1]


def test_spaces_model_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALLLM_SPACES_MODEL", "owner/repo/model.gguf")
    assert spaces_model() == ("owner/repo", "model.gguf")
    monkeypatch.setenv("LOCALLLM_SPACES_MODEL", "repo/model.bin")
    with pytest.raises(LocalLLMError, match=r"owner/repo/file\.gguf"):
        spaces_model()


def test_the_space_preloads_a_sample_fetches_its_model_and_caps_uploads(
    tmp_path: Path, bundled_path: Path
) -> None:
    port = free_port()
    with running_fake_hub() as hub:
        hub.files["demo/bigger/bigger.gguf"] = bundled_path.read_bytes()
        env = cli_env(
            SPACE_ID="someone/localllm-demo",
            LOCALLLM_SPACES_MODEL="demo/bigger/bigger.gguf",
            LOCALLLM_HUB_ENDPOINT=hub.url,
            LOCALLLM_MODELS_DIR=str(tmp_path / "models"),
            LOCALLLM_DOCS_STORE=str(tmp_path / "docs_store"),
            LOCALLLM_CONVERSATIONS_PATH=str(tmp_path / "conversations.sqlite3"),
            LOCALLLM_MAX_TOKENS="24",
            GRADIO_SERVER_PORT=str(port),
        )
        env.pop("HF_HUB_OFFLINE", None)
        log_path = tmp_path / "space.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "app.py")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp_path,
            )
            url = f"http://127.0.0.1:{port}/"
            try:
                deadline = time.monotonic() + 180
                while True:
                    assert proc.poll() is None, log_path.read_text()
                    try:
                        with urllib.request.urlopen(url, timeout=2):
                            break
                    except OSError:
                        pass
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.5)
                assert (tmp_path / "models" / "bigger.gguf").is_file(), "the Space's model"
                client = Client(url, verbose=False)
                _chat, _box, sources, *_ = client.predict(
                    "How do I add an API key?", collection_name="sample", api_name="/chat"
                )
                labels = [label for label, _ in sources["choices"]]
                assert labels and all("README.md" in label for label in labels), labels
                info = client.view_api(return_format="dict", print_info=False)
                model_default = info["named_endpoints"]["/chat"]["parameters"][1]
                assert model_default["parameter_default"] == "bigger.gguf"

                big = b"x" * (21 * 2**20)
                request = urllib.request.Request(
                    url + "gradio_api/upload",
                    data=b'--b\r\nContent-Disposition: form-data; name="files"; '
                    b'filename="big.md"\r\n\r\n' + big + b"\r\n--b--\r\n",
                    headers={"Content-Type": "multipart/form-data; boundary=b"},
                    method="POST",
                )
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(request, timeout=60)
                assert refused.value.code == 413
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_requirements_for_spaces_match_the_package() -> None:
    import tomllib

    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    listed = [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-"))]
    assert set(wanted) <= set(listed), set(wanted) - set(listed)
    front = (ROOT / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
