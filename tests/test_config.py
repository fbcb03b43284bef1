from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localllm.config import Settings
from localllm.privacy import apply_privacy


def test_defaults() -> None:
    s = Settings()
    assert s.models_dir == Path("models")
    assert s.docs_store == Path("docs_store")
    assert s.runs_dir == Path("runs")
    assert s.default_model == "bundled"
    assert s.allow_downloads is False


def test_sources_in_order_toml_then_env_then_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "localllm.toml"
    toml.write_text('models_dir = "from-toml"\nruns_dir = "runs-toml"\ntemperature = 0.1\n')
    monkeypatch.setenv("LOCALLLM_CONFIG", str(toml))
    monkeypatch.setenv("LOCALLLM_MODELS_DIR", "from-env")
    monkeypatch.setenv("LOCALLLM_DOCS_STORE", "store-env")
    s = Settings()
    assert s.models_dir == Path("from-env")
    assert s.runs_dir == Path("runs-toml")
    assert s.docs_store == Path("store-env")
    assert s.temperature == pytest.approx(0.1)
    assert Settings(models_dir=Path("from-ui")).models_dir == Path("from-ui")


def test_privacy_guard_switches_telemetry_off_and_forbids_the_hub() -> None:
    code = (
        "import os, json\n"
        "from localllm.config import Settings\n"
        "from localllm.privacy import apply_privacy\n"
        "apply_privacy(Settings())\n"
        "import huggingface_hub.constants as c\n"
        "print(json.dumps({k: os.environ.get(k) for k in ('GRADIO_ANALYTICS_ENABLED', "
        "'ANONYMIZED_TELEMETRY', 'DO_NOT_TRACK', 'HF_HUB_DISABLE_TELEMETRY', 'HF_HUB_OFFLINE')}"
        " | {'hub_offline': c.HF_HUB_OFFLINE}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LOCALLLM_"))}
    env["LOCALLLM_CONFIG"] = "/nonexistent.toml"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )

    seen = json.loads(out.stdout)
    assert seen == {
        "GRADIO_ANALYTICS_ENABLED": "False",
        "ANONYMIZED_TELEMETRY": "False",
        "DO_NOT_TRACK": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "hub_offline": True,
    }


def test_opting_in_to_downloads_leaves_the_hub_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    applied = apply_privacy(Settings(allow_downloads=True))
    assert "HF_HUB_OFFLINE" not in applied
    assert os.environ.get("HF_HUB_OFFLINE") is None
    assert os.environ["DO_NOT_TRACK"] == "1"
