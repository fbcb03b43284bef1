"""merge_lora_gguf on the bundled SmolLM2: a random PEFT adapter, exported to a GGUF LoRA by the real
export path, merged into the Q4_1 base as F16 / Q8_0 / Q4_K_M, and checked against llama.cpp applying
the same adapter at run time; plus the refusals (bad quant, wrong adapter, cancel, full disk)."""

from __future__ import annotations

import json
import shutil
import threading
from collections import namedtuple
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize
from safetensors.numpy import save_file

from localllm.finetune.export import ExportError, export_lora_gguf
from localllm.finetune.merge import ExportCancelled, check_disk_space, merge_lora_gguf
from localllm.llm.gguf_header import GGUFHeader, read_header

if TYPE_CHECKING:
    from llama_cpp import Llama

RANK = 8
ALPHA = 16.0
# big enough to move the logits by several units, small enough that the model still talks sense
STD = 0.05
ADAPTED = {"self_attn.q_proj": "attn_q", "self_attn.v_proj": "attn_v", "mlp.down_proj": "ffn_down"}
PROMPT = b"The capital of France is Paris. The capital of Germany is"


def _numpy_shapes(model: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> numpy shape (GGUF lists GGML order, reversed)."""
    return {t.name: tuple(reversed(t.shape)) for t in read_header(model).tensors}


def _peft_adapter(folder: Path, base: Path, *, zero_b: bool = False) -> Path:
    """A PEFT LoRA folder for `base`'s q, v and down projections in every block, random weights."""
    shapes = _numpy_shapes(base)
    n_blocks = 1 + max(int(name.split(".")[1]) for name in shapes if name.startswith("blk."))
    rng = np.random.default_rng(0)
    weights: dict[str, np.ndarray] = {}
    for i in range(n_blocks):
        for hf_name, gguf_name in ADAPTED.items():
            out_dim, in_dim = shapes[f"blk.{i}.{gguf_name}.weight"]
            key = f"base_model.model.model.layers.{i}.{hf_name}"
            a = rng.standard_normal((RANK, in_dim)) * STD
            b = rng.standard_normal((out_dim, RANK)) * STD * (0 if zero_b else 1)
            weights[f"{key}.lora_A.weight"] = a.astype(np.float32)
            weights[f"{key}.lora_B.weight"] = b.astype(np.float32)
    folder.mkdir(parents=True)
    save_file(weights, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _write_lora(path: Path, arch: str, tensors: dict[str, np.ndarray]) -> Path:
    """A GGUF LoRA laid out as export.py writes it, with whatever tensors a test needs."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, ALPHA)
    for name, data in tensors.items():
        writer.add_tensor(name, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _llama(model: Path, lora: Path | None = None) -> Llama:
    from llama_cpp import Llama

    return Llama(
        model_path=str(model),
        lora_path=str(lora) if lora else None,
        logits_all=True,
        n_ctx=256,
        n_threads=1,
        seed=0,
        verbose=False,
    )


def _last_logits(model: Path, lora: Path | None = None) -> np.ndarray:
    llm = _llama(model, lora)
    try:
        tokens = llm.tokenize(PROMPT)
        llm.eval(tokens)
        return np.array(llm.scores[len(tokens) - 1], dtype=np.float32)
    finally:
        llm.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("merge")


@pytest.fixture(scope="module")
def lora(bundled_path: Path, work: Path) -> Path:
    adapter = _peft_adapter(work / "adapter", bundled_path)
    return export_lora_gguf(adapter, bundled_path, work / "smol.lora.gguf")


@pytest.fixture(scope="module")
def merged_f16(bundled_path: Path, lora: Path, work: Path) -> Path:
    return merge_lora_gguf(bundled_path, lora, work / "out" / "smol-merged.gguf")


def test_merged_f16_gives_the_logits_of_the_adapter_applied_at_run_time(
    bundled_path: Path, lora: Path, merged_f16: Path, work: Path
) -> None:
    # A no-op adapter (B = 0) merges into the plain dequantized base: the F16 twin of the Q4_1 file,
    # over which llama.cpp applies the adapter with the same F16 kernels the merged file runs on.
    zero = _peft_adapter(work / "zero-adapter", bundled_path, zero_b=True)
    zero_lora = export_lora_gguf(zero, bundled_path, work / "zero.lora.gguf")
    f16_base = merge_lora_gguf(bundled_path, zero_lora, work / "f16-base.gguf")

    merged = _last_logits(merged_f16)
    f16_plain = _last_logits(f16_base)
    f16_with_lora = _last_logits(f16_base, lora)
    q4_plain = _last_logits(bundled_path)
    q4_with_lora = _last_logits(bundled_path, lora)

    # measured: the adapter moves the logits by ~6 (max abs); the merge matches to ~0.03 (F16 rounding)
    effect = np.abs(f16_with_lora - f16_plain).max()
    assert effect > 2.0
    assert np.abs(merged - f16_plain).max() > 2.0, "the merged model ignores the adapter"
    assert np.abs(merged - f16_with_lora).max() < 0.15
    # Over the Q4_1 file llama.cpp multiplies quantized activations, ~0.7 of noise on its own;
    # measured ~1.1 against an effect of ~6.7 there.
    q4_effect = np.abs(q4_with_lora - q4_plain).max()
    assert np.abs(merged - q4_with_lora).max() < 0.35 * q4_effect
    assert merged.argmax() == q4_with_lora.argmax()


def _weights(model: Path, header: GGUFHeader, name: str) -> np.ndarray:
    """One tensor of `model`, dequantized to float32 in numpy shape, straight from the file."""
    t = next(t for t in header.tensors if t.name == name)
    shape = tuple(reversed(t.shape))
    raw = np.memmap(model, np.uint8, "r", header.data_offset + t.offset, (t.n_bytes,))
    return dequantize(raw.reshape(int(np.prod(shape[:-1])), -1), t.qtype).reshape(shape)


def test_merged_file_keeps_the_metadata_and_holds_base_plus_delta(
    bundled_path: Path, lora: Path, merged_f16: Path
) -> None:
    base, out = read_header(bundled_path), read_header(merged_f16)
    assert out.metadata.pop(gguf.Keys.General.FILE_TYPE) == gguf.LlamaFileType.MOSTLY_F16
    base.metadata.pop(gguf.Keys.General.FILE_TYPE)
    assert out.metadata == base.metadata  # scalars and short arrays, chat template included
    assert out.array_lengths == base.array_lengths  # the vocabulary and merges
    assert [t.name for t in out.tensors] == [t.name for t in base.tensors]
    for t in out.tensors:
        f32, f16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16
        assert t.qtype == (f32 if len(t.shape) == 1 else f16), t.name

    lora_t = {t.name: np.array(t.data) for t in gguf.GGUFReader(lora).tensors}
    name = "blk.3.attn_q.weight"
    a, b = lora_t[f"{name}.lora_a"], lora_t[f"{name}.lora_b"]
    expected = _weights(bundled_path, base, name) + ALPHA / RANK * (b @ a)
    np.testing.assert_array_equal(
        _weights(merged_f16, out, name), expected.astype(np.float16).astype(np.float32)
    )
    untouched = "blk.3.attn_k.weight"
    np.testing.assert_array_equal(
        _weights(merged_f16, out, untouched),
        _weights(bundled_path, base, untouched).astype(np.float16).astype(np.float32),
    )


@pytest.mark.parametrize(("quant", "file_type"), [("Q8_0", 7), ("q4_k_m", 15)])
def test_quantized_merge_is_smaller_and_runs(
    bundled_path: Path, lora: Path, merged_f16: Path, work: Path, quant: str, file_type: int
) -> None:
    folder = work / f"quant-{quant}"
    calls: list[tuple[float, str]] = []
    out = merge_lora_gguf(
        bundled_path,
        lora,
        folder / "smol.gguf",
        quant=quant,
        progress=lambda f, m: calls.append((f, m)),
    )
    assert sorted(p.name for p in folder.iterdir()) == ["smol.gguf"]
    assert read_header(out).metadata[gguf.Keys.General.FILE_TYPE] == file_type
    assert out.stat().st_size < 0.6 * merged_f16.stat().st_size
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(m.startswith("quantizing") for _, m in calls)

    if quant == "Q8_0":
        assert _last_logits(out).argmax() == _last_logits(merged_f16).argmax()
    else:  # 576 columns: llama.cpp falls back from Q4_K to Q5_0/Q8_0 for most tensors
        llm = _llama(out)
        try:
            text = llm("The capital of France is", max_tokens=8, temperature=0.0)["choices"][0][
                "text"
            ]
        finally:
            llm.close()
        assert text.strip()


def test_unknown_quant_is_refused_before_anything_is_written(
    bundled_path: Path, lora: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "never"
    with pytest.raises(ExportError, match="F16, Q8_0, Q4_K_M"):
        merge_lora_gguf(bundled_path, lora, folder / "x.gguf", quant="Q3_K_S")
    assert not folder.exists()


def test_an_output_path_that_is_an_input_is_refused(bundled_path: Path, lora: Path) -> None:
    before = lora.read_bytes()
    with pytest.raises(ExportError, match="own inputs"):
        merge_lora_gguf(bundled_path, lora, lora)
    assert lora.read_bytes() == before


def test_an_adapter_for_another_model_is_refused(bundled_path: Path, tmp_path: Path) -> None:
    rank_a = np.zeros((RANK, 576))
    other_arch = _write_lora(
        tmp_path / "qwen.lora.gguf",
        "qwen2",
        {"blk.0.attn_q.weight.lora_a": rank_a, "blk.0.attn_q.weight.lora_b": np.zeros((576, RANK))},
    )
    with pytest.raises(ExportError, match="qwen2"):
        merge_lora_gguf(bundled_path, other_arch, tmp_path / "a.gguf")

    wrong_shape = _write_lora(
        tmp_path / "shape.lora.gguf",
        "llama",
        {"blk.2.attn_k.weight.lora_a": rank_a, "blk.2.attn_k.weight.lora_b": np.zeros((576, RANK))},
    )
    with pytest.raises(ExportError, match=r"blk\.2\.attn_k\.weight"):
        merge_lora_gguf(bundled_path, wrong_shape, tmp_path / "b.gguf")

    no_such_tensor = _write_lora(
        tmp_path / "deep.lora.gguf",
        "llama",
        {
            "blk.99.attn_q.weight.lora_a": rank_a,
            "blk.99.attn_q.weight.lora_b": np.zeros((576, RANK)),
        },
    )
    with pytest.raises(ExportError, match=r"blk\.99\.attn_q\.weight"):
        merge_lora_gguf(bundled_path, no_such_tensor, tmp_path / "c.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "deep.lora.gguf",
        "qwen.lora.gguf",
        "shape.lora.gguf",
    ]


def test_cancel_leaves_nothing_behind_and_the_old_file_intact(
    bundled_path: Path, lora: Path, tmp_path: Path
) -> None:
    out = tmp_path / "smol.gguf"
    out.write_bytes(b"the previous merge, still in use")
    cancel = threading.Event()
    seen: list[str] = []

    def progress(fraction: float, message: str) -> None:
        seen.append(message)
        if len(seen) == 5:
            cancel.set()

    with pytest.raises(ExportCancelled):
        merge_lora_gguf(bundled_path, lora, out, quant="Q8_0", progress=progress, cancel=cancel)
    assert len(seen) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smol.gguf"]
    assert out.read_bytes() == b"the previous merge, still in use"


def test_a_full_disk_is_refused_before_writing(
    bundled_path: Path, lora: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 50 * 2**20, 50 * 2**20)
    )
    with pytest.raises(ExportError, match=r"not enough disk space: need \d+ MB, 50 MB free"):
        merge_lora_gguf(bundled_path, lora, tmp_path / "smol.gguf")
    assert list(tmp_path.iterdir()) == []

    check_disk_space(tmp_path, 50 * 2**20)
    with pytest.raises(ExportError, match=str(tmp_path)):
        check_disk_space(tmp_path, 50 * 2**20 + 1)
