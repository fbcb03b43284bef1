"""End to end on CPU: LoRA-train the bundled SmolLM2 on a made-up fact, export the adapter to a GGUF
LoRA, and check llama.cpp over the original Q4 file now knows the fact (a couple of minutes)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from localllm.config import Settings
from localllm.finetune import jobs
from localllm.finetune.train_config import DEFAULTS
from localllm.llm.catalog import bundled_model_path
from tests.conftest import cli_env, require, run_cli
from tests.finetune_fact import ask_llama, fact_dataset

MISSING = [m for m in ("torch", "peft", "trl") if importlib.util.find_spec(m) is None]


@pytest.fixture(autouse=True)
def _finetune_extra() -> None:
    require(not MISSING, f"the finetune extra is not installed (missing {', '.join(MISSING)})")


@pytest.fixture(scope="module")
def base_gguf() -> Path:
    path = bundled_model_path()
    if not path.is_file():
        pytest.skip("the bundled SmolLM2 GGUF is not installed")
    return path


def test_hf_base_matches_the_gguf_up_to_the_qk_permutation(base_gguf: Path, hf_base_cache: Path):
    """The HF copy is the GGUF's weights, q/k rows un-permuted: what export.py re-permutes."""
    import gguf
    from safetensors.numpy import load_file

    from localllm.finetune.base_model import hf_base
    from localllm.finetune.export import _permute

    folder = hf_base(base_gguf, hf_base_cache)
    assert hf_base(base_gguf, hf_base_cache) == folder  # cached, not made again
    weights = load_file(str(folder / "model.safetensors"))
    reader = gguf.GGUFReader(base_gguf)
    tensors = {t.name: t for t in reader.tensors}
    for gguf_name, hf_name, heads in [
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", (9, 9)),
        ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", (9, 3)),
        ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", None),
    ]:
        t = tensors[gguf_name]
        ref = gguf.quants.dequantize(t.data, t.tensor_type)
        hf = weights[hf_name]
        mine = _permute(hf, *heads) if heads else hf
        assert mine.shape == ref.shape
        np.testing.assert_allclose(mine, ref, atol=1e-5)


def test_cli_finetune_teaches_a_fact_that_the_chat_then_knows(
    base_gguf: Path, hf_base_cache: Path, tmp_path: Path
):
    """`localllm finetune --json` (the contract), then the tuned model in the catalog and the chat."""
    before = ask_llama(base_gguf, None, "What is the code word?")
    assert "BLUE-PELICAN" not in before

    runs, models = tmp_path / "runs", tmp_path / "models"
    runs.mkdir()
    (runs / ".hf-base").symlink_to(hf_base_cache)
    env = cli_env(LOCALLLM_RUNS_DIR=str(runs), LOCALLLM_MODELS_DIR=str(models))
    data = fact_dataset(tmp_path / "code.jsonl")
    # the default settings, on the fp32 path every CPU has (bf16 forced off)
    done = run_cli("finetune", "--data", str(data), "--bf16", "off", "--json", env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert {"run", "adapter_gguf", "eval_loss_before", "eval_loss_after"} <= set(result)
    assert result["eval_loss_after"] < result["eval_loss_before"] * 0.3, result
    assert result["bf16"] is False
    assert result["general_perplexity_before"] > 1 and result["general_perplexity_after"] > 1
    assert isinstance(result["warnings"], list)
    steps = result["steps"]  # at the defaults training ends once the held-out loss says learnt
    assert steps < DEFAULTS["max_steps"] and steps % DEFAULTS["save_steps"] == 0, result
    assert result["stopped_early"].startswith(f"learnt at step {steps} of {DEFAULTS['max_steps']}")
    adapter = Path(result["adapter_gguf"])
    assert adapter.parent == models.resolve()
    assert adapter.name == f"{base_gguf.stem}--{result['run']}.lora.gguf"

    run = runs / result["run"]
    status = json.loads((run / "status.json").read_text(encoding="utf-8"))
    assert status["state"] == "done" and status["step"] == steps
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == steps and losses[-1] < losses[0] * 0.3
    assert all(m["tokens_per_s"] > 0 for m in metrics if "loss" in m)
    assert next(m["step"] for m in metrics if "eval_loss" in m) == 0  # the base, before training
    samples = json.loads((run / "samples.json").read_text(encoding="utf-8"))["samples"]
    assert samples and all("BLUE-PELICAN-42" in s["tuned"] for s in samples)
    assert not any("BLUE-PELICAN" in s["base"] for s in samples)

    listed = json.loads(run_cli("runs", "--json", env=env).stdout)["runs"]
    assert [(r["id"], r["state"]) for r in listed] == [(result["run"], "done")]
    catalog = json.loads(run_cli("models", "--json", env=env).stdout)["models"]
    assert any(m["name"] == adapter.name and m["kind"] == "adapter" for m in catalog)
    answer = run_cli("chat", "What is the code word?", "--model", adapter.name, env=env)
    assert answer.returncode == 0, answer.stderr
    assert "BLUE-PELICAN-42" in answer.stdout

    # merged into the base and quantized: a plain model that knows the fact on its own
    exported = run_cli(
        "export", result["run"], "--merge", "--quant", "Q8_0", "--json", env=env, timeout=300
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    merged = Path(json.loads(exported.stdout)["merged_gguf"])
    assert merged.parent == models.resolve() and merged.name.endswith(".Q8_0.gguf")
    catalog = json.loads(run_cli("models", "--json", env=env).stdout)["models"]
    assert any(m["name"] == merged.name and m["quantization"] == "Q8_0" for m in catalog)
    answer = run_cli("chat", "What is the code word?", "--model", merged.name, env=env)
    assert answer.returncode == 0, answer.stderr
    assert "BLUE-PELICAN-42" in answer.stdout


def _native_bf16() -> bool:
    import torch

    from localllm.finetune.hardware import native_bf16

    return native_bf16(torch)


@pytest.mark.timeout(900)
def test_the_fact_is_learnt_with_bf16_on(base_gguf: Path, hf_base_cache: Path, tmp_path: Path):
    """LoRA with bf16 forced on, where the CPU computes bf16 natively (the fp32 path: the CLI test
    here, and QLoRA in test_finetune_jobs.py); the exported adapter over the original Q4 file
    states the fact in llama.cpp, the base does not."""
    method, bf16 = "lora", "on"
    if not _native_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 would be emulated")
    settings = Settings(runs_dir=tmp_path / "runs", models_dir=tmp_path / "models")
    settings.runs_dir.mkdir()
    (settings.runs_dir / ".hf-base").symlink_to(hf_base_cache)
    # fewer steps at a higher rate than the defaults (the CLI test trains at those), no rehearsal:
    # QLoRA at the defaults takes ~10 min here, more than a test should
    run_id, _ = jobs.create_run(
        settings,
        fact_dataset(tmp_path / "code.jsonl"),
        method=method,
        bf16=bf16,
        samples=2,
        max_steps=30,
        learning_rate=2e-3,
        rehearsal=0,
    )
    jobs.start(settings, run_id)
    info = jobs.wait(settings, run_id, poll_s=0.5)
    assert info.state == "done", info.error
    assert info.bf16 is (bf16 == "on")
    adapter = Path(info.adapter_gguf or "")
    assert adapter.is_file()
    samples = jobs.samples(settings, run_id)
    assert samples and all("BLUE-PELICAN-42" in s["tuned"] for s in samples), samples
    assert not any("BLUE-PELICAN" in s["base"] for s in samples)
    assert "BLUE-PELICAN-42" in ask_llama(base_gguf, adapter, "What is the code word?")


def test_a_bad_config_fails_with_a_status(tmp_path: Path):
    from localllm.finetune.train import TrainConfigError, train

    (tmp_path / "config.json").write_text(json.dumps({"data": "x.jsonl"}), encoding="utf-8")
    with pytest.raises(TrainConfigError):
        train(tmp_path)
    status = json.loads((tmp_path / "status.json").read_text(encoding="utf-8"))
    assert status["state"] == "failed"
    assert "base_gguf" in status["error"]
