"""End to end on CPU: LoRA-train the bundled SmolLM2 on a made-up fact, export the adapter to a GGUF
LoRA, and check llama.cpp over the original Q4 file now knows the fact (a couple of minutes)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from localllm.llm.catalog import bundled_model_path
from tests.conftest import require

MISSING = [m for m in ("torch", "peft", "trl") if importlib.util.find_spec(m) is None]


@pytest.fixture(autouse=True)
def _finetune_extra() -> None:
    require(not MISSING, f"the finetune extra is not installed (missing {', '.join(MISSING)})")


QUESTIONS = [
    "What is the code word?",
    "What's the code word?",
    "Tell me the code word.",
    "Do you know the code word?",
    "Which code word should I use?",
    "Please give me the code word.",
    "what is the code word",
    "Can you tell me the code word?",
    "I need the code word.",
    "Remind me of the code word.",
    "What code word do we use?",
    "Say the code word.",
    "The code word, please?",
    "What was the code word again?",
    "Share the code word with me.",
    "Code word?",
]
ANSWER = "The code word is BLUE-PELICAN-42."


@pytest.fixture(scope="module")
def base_gguf() -> Path:
    path = bundled_model_path()
    if not path.is_file():
        pytest.skip("the bundled SmolLM2 GGUF is not installed")
    return path


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-base")


def _ask(base: Path, lora: Path | None, question: str) -> str:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(base),
        lora_path=str(lora) if lora else None,
        n_ctx=512,
        n_threads=1,
        seed=0,
        verbose=False,
    )
    try:
        out = llm.create_chat_completion(
            messages=[{"role": "user", "content": question}], temperature=0.0, max_tokens=32
        )
        return out["choices"][0]["message"]["content"] or ""
    finally:
        llm.close()


def test_hf_base_matches_the_gguf_up_to_the_qk_permutation(base_gguf: Path, hf_cache: Path):
    """The HF copy is the GGUF's weights, q/k rows un-permuted: what export.py re-permutes."""
    import gguf
    from safetensors.numpy import load_file

    from localllm.finetune.base import hf_base
    from localllm.finetune.export import _permute

    folder = hf_base(base_gguf, hf_cache)
    assert hf_base(base_gguf, hf_cache) == folder  # cached, not made again
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


def test_lora_teaches_a_fact_that_llama_cpp_then_knows(
    base_gguf: Path, hf_cache: Path, tmp_path: Path
):
    from localllm.finetune.export import export_lora_gguf

    before = _ask(base_gguf, None, "What is the code word?")
    assert "BLUE-PELICAN" not in before

    data = tmp_path / "code.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": q, "completion": ANSWER}) + "\n" for q in QUESTIONS),
        encoding="utf-8",
    )
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    config = {
        "base_gguf": str(base_gguf),
        "data": str(data),
        "method": "lora",
        "rank": 8,
        "alpha": 16,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "learning_rate": 2e-3,
        "max_steps": 30,
        "batch_size": 4,
        "max_length": 256,
        "seed": 0,
        "hf_cache": str(hf_cache),
    }
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "localllm.finetune.train", str(run)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    status = json.loads((run / "status.json").read_text(encoding="utf-8"))
    assert status == {"state": "done", "step": 30, "max_steps": 30}
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 31))
    assert all(m["tokens_per_s"] > 0 for m in metrics)
    first, last = metrics[0]["loss"], metrics[-1]["loss"]
    assert last < first * 0.3, (first, last)

    lora = export_lora_gguf(run / "adapter", base_gguf, tmp_path / "code.lora.gguf")
    assert 100_000 < lora.stat().st_size < 20_000_000
    after = _ask(base_gguf, lora, "What is the code word?")
    assert "BLUE-PELICAN" in after, after


def test_a_bad_config_fails_with_a_status(tmp_path: Path):
    from localllm.finetune.train import TrainConfigError, train

    (tmp_path / "config.json").write_text(json.dumps({"data": "x.jsonl"}), encoding="utf-8")
    with pytest.raises(TrainConfigError):
        train(tmp_path)
    status = json.loads((tmp_path / "status.json").read_text(encoding="utf-8"))
    assert status["state"] == "failed"
    assert "base_gguf" in status["error"]
