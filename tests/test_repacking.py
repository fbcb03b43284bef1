"""llama.cpp's weight repacking: forced on or off by a setting, and on AMX CPUs chosen by a probe
in a child process, so that a CPU whose repacked kernels crash still answers (both branches run a
real model here; the probe's verdict is cached per llama.cpp build and CPU)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from localllm.llm import repacking
from tests.conftest import cli_env

ANSWER = """
from localllm.llm.base import GenerationParams
from localllm.llm.catalog import bundled_model_path
from localllm.llm.llamacpp import LlamaCppChatModel
from localllm.llm.repacking import repacking
model = LlamaCppChatModel(bundled_model_path(), context_size=512)
text = "".join(model.stream_chat(
    [{"role": "user", "content": "Name three colours of the rainbow, please."}],
    GenerationParams(max_tokens=8, temperature=0.0),
))
print(repacking(), repr(text))
"""


def answer_with(value: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = cli_env(LOCALLLM_LLAMA_REPACK=value, XDG_CACHE_HOME=str(cache))
    return subprocess.run(
        [sys.executable, "-c", ANSWER], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize("value", ["off", "auto"])
def test_the_model_answers_with_repacking_off_and_on_the_automatic_choice(
    value: str, bundled_path: Path, tmp_path: Path
) -> None:
    done = answer_with(value, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    chosen, _, text = done.stdout.strip().partition(" ")
    works = not repacking.has_amx() or repacking.probe(bundled_path)
    assert chosen == str(value == "auto" and works)
    assert len(text.strip("'\" ")) > 0


def test_the_model_answers_with_repacking_on_where_the_probe_says_it_works(
    bundled_path: Path, tmp_path: Path
) -> None:
    if repacking.has_amx() and not repacking.probe(bundled_path):
        # This CPU is the other branch: forced on, it must crash, which is why auto probes.
        done = answer_with("on", tmp_path)
        assert done.returncode != 0
        return
    done = answer_with("on", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("True ")


def crashing_python(folder: Path) -> str:
    """A child process that dies of a segmentation fault, as repacked AMX kernels were seen to."""
    path = folder / "python"
    path.write_text("#!/bin/sh\nkill -SEGV $$\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_a_probe_whose_child_crashes_turns_repacking_off(
    bundled_path: Path, tmp_path: Path
) -> None:
    assert repacking.probe(bundled_path, python=crashing_python(tmp_path)) is False
    assert repacking.probe(tmp_path / "missing.gguf") is False


def test_auto_probes_only_on_amx_cpus_and_keeps_the_verdict(
    bundled_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    probed: list[Path] = []

    def crashes(path: Path) -> bool:
        probed.append(path)
        return repacking.probe(path, python=crashing_python(tmp_path))

    assert repacking.decide("auto", {"avx2", "avx512f"}, crashes) is True
    assert probed == []
    amx = {"avx512f", "amx_tile", "amx_int8"}
    assert repacking.decide("auto", amx, crashes) is False
    assert probed == [bundled_path]
    (saved,) = (tmp_path / "localllm").glob("llama-repack-*.json")
    assert json.loads(saved.read_text()) == {"repack": False}
    assert repacking.decide("auto", amx, crashes) is False
    assert len(probed) == 1, "the kept verdict is used, not a second probe"
    assert repacking.decide("on", amx, crashes) is True
    assert repacking.decide("off", {"avx2"}, crashes) is False


def test_a_wrong_value_is_named() -> None:
    env = {**os.environ, repacking.ENV: "sometimes"}
    done = subprocess.run(
        [sys.executable, "-c", "from localllm.llm.repacking import choice; choice()"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode != 0
    assert "LOCALLLM_LLAMA_REPACK must be one of auto, on, off, not 'sometimes'" in done.stderr
