"""export.py reads a PEFT adapter in whatever dtype training saved it (fp32, fp16, bf16: QLoRA with
bf16 saves bf16, which numpy has no type for) and writes the f32 GGUF LoRA llama.cpp loads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from localllm.finetune.export import ExportError, export_lora_gguf
from tests.conftest import require

RANK = 4
# SmolLM2-135M: hidden 576, 9 query heads and 3 key/value heads of 64
SHAPES = {
    "model.layers.0.self_attn.q_proj": (576, 576),
    "model.layers.0.self_attn.v_proj": (576, 192),
    "model.layers.1.mlp.down_proj": (1536, 576),
}


@pytest.fixture(autouse=True)
def _torch() -> None:
    require(importlib.util.find_spec("torch") is not None, "the finetune extra is not installed")


def _adapter(folder: Path, dtype: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A PEFT adapter folder with random LoRA weights saved as `dtype`; returns them as float32
    (after the round trip through that dtype, which is what export must reproduce)."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors, exact = {}, {}
    for name, (fan_in, fan_out) in SHAPES.items():
        for part, shape in (("A", (RANK, fan_in)), ("B", (fan_out, RANK))):
            key = f"base_model.model.{name}.lora_{part}.weight"
            value = (torch.randn(shape, generator=generator) * 0.05).to(getattr(torch, dtype))
            tensors[key] = value.contiguous()
            exact[key] = value.to(torch.float32).numpy()
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "lora_alpha": 8, "r": RANK, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    return exact


def _gguf_tensors(path: Path) -> dict[str, np.ndarray]:
    import gguf

    reader = gguf.GGUFReader(path)
    return {t.name: np.array(t.data) for t in reader.tensors}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_export_reads_every_dtype_and_writes_f32(
    dtype: str, bundled_path: Path, tmp_path: Path
) -> None:
    from llama_cpp import Llama

    from localllm.finetune.export import _permute

    exact = _adapter(tmp_path / "adapter", dtype)
    out = export_lora_gguf(tmp_path / "adapter", bundled_path, tmp_path / "out.lora.gguf")
    written = _gguf_tensors(out)
    assert set(written) == {
        "blk.0.attn_q.weight.lora_a",
        "blk.0.attn_q.weight.lora_b",
        "blk.0.attn_v.weight.lora_a",
        "blk.0.attn_v.weight.lora_b",
        "blk.1.ffn_down.weight.lora_a",
        "blk.1.ffn_down.weight.lora_b",
    }
    assert all(t.dtype == np.float32 for t in written.values())
    prefix = "base_model.model.model.layers"
    np.testing.assert_array_equal(
        written["blk.0.attn_v.weight.lora_a"], exact[f"{prefix}.0.self_attn.v_proj.lora_A.weight"]
    )
    np.testing.assert_array_equal(
        written["blk.1.ffn_down.weight.lora_b"], exact[f"{prefix}.1.mlp.down_proj.lora_B.weight"]
    )
    # q's rows are permuted for llama.cpp's rope layout, the values themselves unchanged
    np.testing.assert_array_equal(
        written["blk.0.attn_q.weight.lora_b"],
        _permute(exact[f"{prefix}.0.self_attn.q_proj.lora_B.weight"], 9, 9),
    )
    llm = Llama(model_path=str(bundled_path), lora_path=str(out), n_ctx=64, verbose=False)
    llm.close()  # llama.cpp accepts the file as an adapter for this base


def test_bf16_and_fp32_adapters_export_alike(bundled_path: Path, tmp_path: Path) -> None:
    """The same weights saved as fp32 and as bf16 give the same GGUF to bf16 precision."""
    import torch
    from safetensors.torch import load_file, save_file

    _adapter(tmp_path / "fp32", "float32")
    (tmp_path / "bf16").mkdir()
    weights = load_file(str(tmp_path / "fp32" / "adapter_model.safetensors"))
    save_file(
        {k: v.to(torch.bfloat16) for k, v in weights.items()},
        str(tmp_path / "bf16" / "adapter_model.safetensors"),
    )
    config = (tmp_path / "fp32" / "adapter_config.json").read_text(encoding="utf-8")
    (tmp_path / "bf16" / "adapter_config.json").write_text(config, encoding="utf-8")
    full = _gguf_tensors(export_lora_gguf(tmp_path / "fp32", bundled_path, tmp_path / "a.gguf"))
    half = _gguf_tensors(export_lora_gguf(tmp_path / "bf16", bundled_path, tmp_path / "b.gguf"))
    for name, value in full.items():
        np.testing.assert_allclose(half[name], value, rtol=1e-2, atol=1e-4)


def test_integer_tensors_are_refused(bundled_path: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    _adapter(tmp_path / "adapter", "float32")
    save_file(
        {
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(
                4, 576, dtype=torch.int8
            )
        },
        str(tmp_path / "adapter" / "adapter_model.safetensors"),
    )
    with pytest.raises(ExportError, match="int8"):
        export_lora_gguf(tmp_path / "adapter", bundled_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
