"""Runs as the app and CLI drive them: QLoRA through cancel, a crash and resume; bad datasets and
bad bases fail clearly and harm nothing already there."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from pathlib import Path

import pytest

from localllm.config import Settings
from localllm.errors import DatasetError, LocalLLMError
from localllm.finetune import jobs
from tests.conftest import cli_env, require, run_cli
from tests.finetune_fact import ask_llama, fact_dataset

MISSING = [
    m for m in ("torch", "peft", "trl", "bitsandbytes") if importlib.util.find_spec(m) is None
]


def _examples(n: int) -> str:
    return "".join(
        json.dumps({"messages": [
            {"role": "user", "content": f"What is item {i} called?"},
            {"role": "assistant", "content": f"Item {i} is called Zorblat-{i * 7}."},
        ]}) + "\n"
        for i in range(n)
    )  # fmt: skip


def _wait_for(settings: Settings, run_id: str, step: int, timeout: float = 300) -> jobs.RunInfo:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = jobs.run_info(settings, run_id)
        if info.step >= step or not info.active:
            return info
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not reach step {step}")


@pytest.fixture
def tuned_settings(settings: Settings, hf_base_cache: Path) -> Settings:
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    (settings.runs_dir / ".hf-base").symlink_to(hf_base_cache)
    return settings


@pytest.mark.timeout(900)
def test_qlora_fp32_learns_the_fact_through_a_cancel_a_crash_and_two_resumes(
    tuned_settings: Settings, tmp_path: Path, bundled_path: Path
):
    """QLoRA with bf16 forced off (the path an AVX2 laptop takes), as the app drives a run: it is
    cancelled, resumed, killed, resumed again to the end, and then states the fact in llama.cpp
    over the original Q4 file, where the base does not."""
    require(not MISSING, f"the finetune extra is not installed (missing {', '.join(MISSING)})")
    settings = tuned_settings
    # a higher rate than the defaults and no rehearsal: QLoRA at the defaults takes ~10 min here
    run_id, loaded = jobs.create_run(
        settings,
        fact_dataset(tmp_path / "code.jsonl"),
        method="qlora",
        bf16="off",
        max_steps=30,
        save_steps=5,
        learning_rate=2e-3,
        rehearsal=0,
        samples=2,
    )
    assert len(loaded.examples) == 16 and not loaded.problems
    jobs.start(settings, run_id)
    with pytest.raises(jobs.RunError, match="already"):
        jobs.start(settings, run_id)

    # cancel: stops at the end of a step with a checkpoint there
    reached = _wait_for(settings, run_id, 1)
    assert reached.state == "running", reached
    jobs.cancel(settings, run_id)
    cancelled = jobs.wait(settings, run_id, poll_s=0.3)
    assert cancelled.state == "cancelled" and cancelled.resumable, cancelled
    stopped_at = cancelled.step
    assert 1 <= stopped_at < 30
    run = Path(cancelled.path)
    assert (run / "checkpoints" / f"checkpoint-{stopped_at}").is_dir()
    assert cancelled.eval_loss_before is not None and cancelled.eval_loss_after is None

    # a crash (the process killed): the run says so, and resume still works from a checkpoint
    jobs.start(settings, run_id, resume=True)
    moving = _wait_for(settings, run_id, stopped_at + 2)
    assert moving.active, moving
    os.kill(json.loads((run / "status.json").read_text())["pid"], signal.SIGKILL)
    crashed = jobs.wait(settings, run_id, poll_s=0.3)
    assert crashed.state == "failed" and "stopped without finishing" in (crashed.error or "")
    assert crashed.resumable

    jobs.start(settings, run_id, resume=True)
    done = jobs.wait(settings, run_id, poll_s=0.5)
    assert done.state == "done", done.error
    assert done.bf16 is False
    assert done.eval_loss_after is not None and done.eval_loss_before is not None
    assert done.eval_loss_after < done.eval_loss_before * 0.3
    steps = [m["step"] for m in jobs.metrics(settings, run_id) if "loss" in m]
    assert steps == list(range(1, done.step + 1))  # each step once: the repeated ones replaced
    assert done.step == 30 or (done.stopped_early or "").startswith(f"learnt at step {done.step}")
    adapter = Path(done.adapter_gguf or "")
    assert adapter.is_file() and adapter.parent == settings.models_dir.resolve()
    samples = jobs.samples(settings, run_id)
    assert samples and all("BLUE-PELICAN-42" in s["tuned"] for s in samples), samples
    assert not any("BLUE-PELICAN" in s["base"] for s in samples)
    assert "BLUE-PELICAN-42" in ask_llama(bundled_path, adapter, "What is the code word?")
    assert "BLUE-PELICAN" not in ask_llama(bundled_path, None, "What is the code word?")


def test_bad_datasets_are_refused_with_the_reason(settings: Settings, tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"empty\.jsonl"):
        jobs.create_run(settings, empty)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"question": "q", "reply": "a"}\nnot json\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DatasetError) as refused:
        jobs.create_run(settings, wrong)
    message = str(refused.value)
    assert "line 1" in message and "line 2: invalid JSON" in message and "line 3" in message
    assert jobs.list_runs(settings) == []

    mixed = tmp_path / "mixed.jsonl"
    long_answer = " ".join(["word"] * 400)
    mixed.write_text(
        _examples(3) + "oops\n" + json.dumps({"prompt": "long?", "completion": long_answer}) + "\n",
        encoding="utf-8",
    )
    run_id, loaded = jobs.create_run(settings, mixed, max_length=64)
    assert len(loaded.examples) == 4 and [p.line for p in loaded.problems] == [4]
    info = jobs.run_info(settings, run_id)
    assert info.examples == 4 and info.truncated == 1 and info.state == "created"


def test_cli_bad_input_fails_clearly_and_harms_nothing(tmp_path: Path, bundled_path: Path):
    runs, models = tmp_path / "runs", tmp_path / "models"
    models.mkdir()
    keep = models / "keep.gguf"
    keep.write_bytes(bundled_path.read_bytes())
    env = cli_env(LOCALLLM_RUNS_DIR=str(runs), LOCALLLM_MODELS_DIR=str(models))

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    out = run_cli("finetune", "--data", str(empty), "--json", env=env)
    assert out.returncode == 1 and "empty.jsonl is empty" in json.loads(out.stdout)["error"]

    missing = run_cli("finetune", "--data", str(tmp_path / "nope.jsonl"), env=env)
    assert missing.returncode == 1 and "nope.jsonl" in missing.stderr

    data = tmp_path / "ok.jsonl"
    data.write_text(_examples(4), encoding="utf-8")
    no_base = run_cli("finetune", "--data", str(data), "--base", "absent.gguf", env=env)
    assert no_base.returncode == 1 and "no model named 'absent.gguf'" in no_base.stderr
    bad_rank = run_cli("finetune", "--data", str(data), "--rank", "0", env=env)
    assert bad_rank.returncode == 1 and "rank must be a positive number" in bad_rank.stderr

    unknown = run_cli("export", "no-such-run", env=env)
    assert unknown.returncode == 1 and "no fine-tune run 'no-such-run'" in unknown.stderr
    listed = json.loads(run_cli("runs", "--json", env=env).stdout)
    assert listed["runs"] == []
    assert [p.name for p in models.iterdir()] == ["keep.gguf"]
    assert keep.read_bytes() == bundled_path.read_bytes()


def test_a_base_transformers_cannot_load_fails_the_run_with_the_reason(
    settings: Settings, tmp_path: Path, bundled_path: Path
):
    """A GGUF llama.cpp reads but transformers can't: the run fails and says why."""
    require(not MISSING, f"the finetune extra is not installed (missing {', '.join(MISSING)})")
    from tests.gguf_factory import copy_without_chat_template

    settings.models_dir.mkdir(parents=True)
    odd = copy_without_chat_template(bundled_path, settings.models_dir / "odd.gguf")
    raw = bytearray(odd.read_bytes())
    at = raw.find(b"general.architecture")
    assert at > 0
    arch = raw.find(b"llama", at)
    raw[arch : arch + 5] = b"lxama"  # an architecture no library knows; the header still parses
    odd.write_bytes(bytes(raw))
    data = tmp_path / "ok.jsonl"
    data.write_text(_examples(4), encoding="utf-8")
    previous = settings.runs_dir / "older-run"
    previous.mkdir(parents=True)
    (previous / "config.json").write_text("{}", encoding="utf-8")
    try:
        run_id, _ = jobs.create_run(settings, data, base="odd.gguf", max_steps=2)
    except LocalLLMError as e:  # refused up front: also a clear reason
        assert "odd.gguf" in str(e) or "lxama" in str(e)
        return
    jobs.start(settings, run_id)
    info = jobs.wait(settings, run_id, poll_s=0.3)
    assert info.state == "failed"
    assert "lxama" in (info.error or "") or "can't load" in (info.error or ""), info.error
    assert (previous / "config.json").read_text() == "{}"


def test_out_of_disk_is_refused_before_anything_is_written(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import shutil
    from collections import namedtuple

    data = tmp_path / "ok.jsonl"
    data.write_text(_examples(4), encoding="utf-8")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 50 * 2**20, 50 * 2**20)
    )
    with pytest.raises(jobs.RunError, match=r"not enough disk space .* 50 MB free"):
        jobs.create_run(settings, data)
    assert jobs.list_runs(settings) == []


def test_training_threads_leave_a_busy_core_alone():
    """Torch gets the cores nothing else is using: one spinning program takes one away."""
    import subprocess
    import sys

    from localllm.cpu import available_cores
    from localllm.finetune.hardware import training_threads

    cores = available_cores()
    require(cores >= 2, "needs two cores")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert training_threads() <= cores - 1
    finally:
        spinner.kill()
        spinner.wait()


def test_the_estimate_follows_method_steps_and_length():
    from localllm.finetune.estimate import estimate

    common = {"steps": 100, "batch_size": 4, "mean_tokens": 180, "max_length": 256}
    lora = estimate(135_000_000, method="lora", **common)
    qlora = estimate(135_000_000, method="qlora", **common)
    assert qlora.peak_bytes < lora.peak_bytes * 0.7 and qlora.seconds > lora.seconds
    dpo_4bit = estimate(135_000_000, method="dpo", four_bit=True, **common)
    assert dpo_4bit.peak_bytes == qlora.peak_bytes
    assert estimate(135_000_000, method="dpo", **common).peak_bytes == lora.peak_bytes
    assert estimate(135_000_000, method="lora", **{**common, "steps": 200}).seconds == (
        2 * lora.seconds
    )
    cut = estimate(135_000_000, method="lora", **{**common, "max_length": 90})
    assert cut.tokens_per_step == 360 and cut.peak_bytes < lora.peak_bytes
    assert "GB of memory" in lora.describe()


def test_an_hf_model_folder_is_a_base_and_its_adapter_goes_over_the_gguf(
    tuned_settings: Settings, tmp_path: Path, bundled_path: Path, hf_base_cache: Path
):
    """Training from a local Hugging Face folder; the adapter is exported over the GGUF of the same
    model and llama.cpp loads it. A folder of another model is refused before anything runs."""
    require(not MISSING, f"the finetune extra is not installed (missing {', '.join(MISSING)})")
    from localllm.finetune.base_model import hf_base
    from localllm.llm.llamacpp import LlamaCppChatModel

    folder = hf_base(bundled_path, hf_base_cache)  # a plain HF folder: config, weights, tokenizer
    data = tmp_path / "items.jsonl"
    data.write_text(_examples(8), encoding="utf-8")
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"num_hidden_layers": 24, "hidden_size": 896}))
    with pytest.raises(jobs.RunError, match="is not the model of"):
        jobs.create_run(tuned_settings, data, base=str(other))

    run_id, _ = jobs.create_run(tuned_settings, data, base=str(folder), max_steps=2, samples=0)
    info = jobs.run_info(tuned_settings, run_id)
    assert info.config["base_hf"] == str(folder.resolve()) and info.base == folder.name
    jobs.start(tuned_settings, run_id)
    done = jobs.wait(tuned_settings, run_id, poll_s=0.5)
    assert done.state == "done", done.error
    adapter = Path(done.adapter_gguf or "")
    assert adapter.is_file()
    model = LlamaCppChatModel(bundled_path, context_size=256, n_threads=1, lora_path=adapter)
    try:
        assert model.count_tokens("hello") > 0
    finally:
        model.close()


def test_a_base_without_chat_template_is_refused_for_chat_examples(
    settings: Settings, tmp_path: Path, no_template_model: Path
):
    """A base with no chat template would train on ChatML whose end marker it doesn't know, and
    then never stop answering: chat examples are refused up front, plain text is accepted."""
    require(not MISSING, f"the finetune extra is not installed (missing {', '.join(MISSING)})")
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    base = settings.models_dir / no_template_model.name
    base.symlink_to(no_template_model)
    data = tmp_path / "chat.jsonl"
    data.write_text(_examples(4), encoding="utf-8")
    with pytest.raises(jobs.RunError, match="no chat template"):
        jobs.create_run(settings, data, base=base.name, max_steps=1)
    assert not any(settings.runs_dir.glob("2*"))
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"text": "Plain text to continue."}) + "\n", encoding="utf-8")
    run_id, _ = jobs.create_run(settings, text, base=base.name, max_steps=1)
    assert jobs.run_info(settings, run_id).state == "created"
