from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli_env, run_cli


def test_models_json_lists_the_bundled_model_and_a_broken_file(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "broken.gguf").write_bytes(b"\x7fELF" + b"\x00" * 100)
    result = run_cli("models", "--json", env=cli_env(LOCALLLM_MODELS_DIR=str(models)))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    by_name = {m["name"]: m for m in payload["models"]}
    bundled = next(m for m in payload["models"] if m["bundled"])
    assert bundled["status"] == "ok" and bundled["architecture"] == "llama"
    assert bundled["has_chat_template"] is True and bundled["quantization"] == "Q4_1"
    assert by_name["broken.gguf"]["status"] == "broken"
    assert "not a GGUF" in by_name["broken.gguf"]["error"]


def test_models_text_output(tmp_path: Path) -> None:
    result = run_cli("models", env=cli_env(LOCALLLM_MODELS_DIR=str(tmp_path / "m")))
    assert result.returncode == 0
    assert "(bundled)" in result.stdout and "Q4_1" in result.stdout
    assert (tmp_path / "m").is_dir(), "the models folder is created on first use"


def test_chat_answers_with_the_bundled_model(tmp_path: Path) -> None:
    env = cli_env(LOCALLLM_MODELS_DIR=str(tmp_path / "models"))
    result = run_cli(
        "chat",
        "What is the capital of France?",
        "--json",
        "--temperature",
        "0",
        "--max-tokens",
        "24",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "JSON output is one object on stdout"
    payload = json.loads(lines[0])
    assert "Paris" in payload["answer"]
    assert payload["model"].startswith("SmolLM2")
    assert payload["completion_tokens"] > 0


def test_chat_streams_plain_text(tmp_path: Path) -> None:
    env = cli_env(LOCALLLM_MODELS_DIR=str(tmp_path / "models"))
    result = run_cli("chat", "Say hello.", "--max-tokens", "16", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_chat_with_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    env = cli_env(LOCALLLM_MODELS_DIR=str(tmp_path / "models"))
    result = run_cli("chat", "hi", "--model", "missing.gguf", "--json", env=env)
    assert result.returncode == 1
    assert "no model named 'missing.gguf'" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["error"].startswith("no model named")


def test_chat_with_a_truncated_model_says_why(tmp_path: Path, bundled_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "cut.gguf").write_bytes(bundled_path.read_bytes()[:10_000_000])
    result = run_cli(
        "chat", "hi", "--model", "cut.gguf", env=cli_env(LOCALLLM_MODELS_DIR=str(models))
    )
    assert result.returncode == 1
    assert "cut.gguf can't be loaded: truncated" in result.stderr


def test_prompt_longer_than_the_context_is_refused_cleanly(tmp_path: Path) -> None:
    env = cli_env(LOCALLLM_MODELS_DIR=str(tmp_path / "models"), LOCALLLM_CONTEXT_SIZE="256")
    result = run_cli("chat", "lorem ipsum " * 400, env=env)
    assert result.returncode == 1
    assert "model's context window" in result.stderr  # too many tokens, or characters
    assert "Traceback" not in result.stderr


def test_bad_settings_are_reported(tmp_path: Path) -> None:
    result = run_cli("models", env=cli_env(LOCALLLM_CONTEXT_SIZE="lots"))
    assert result.returncode == 2
    assert "bad settings" in result.stderr and "context_size" in result.stderr
