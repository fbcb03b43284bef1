"""A PEFT LoRA adapter as a GGUF LoRA adapter, which llama.cpp applies over the original (quantized)
base file: `Llama(model_path=base_gguf, lora_path=out_path)`.

Laid out as llama.cpp's convert_lora_to_gguf.py writes it: general.type "adapter", adapter.type
"lora", adapter.lora.alpha, and for each adapted weight `<gguf name>.lora_a` (rank x in) and
`<gguf name>.lora_b` (out x rank), f32, named with gguf's own tensor tables. For llama-family
models the HF -> GGUF conversion permutes the rows of attn_q and attn_k (rope layout); the LoRA
delta B @ A must be permuted the same way, which only touches the rows of B.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from localllm.errors import LocalLLMError


class ExportError(LocalLLMError):
    """The adapter can't be written as a GGUF LoRA; the message says why."""


# architectures whose HF -> GGUF conversion permutes q/k rows as LlamaModel.permute does
_PERMUTED_QK = {"llama"}
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$")


def export_lora_gguf(adapter_dir: str | Path, base_gguf: str | Path, out_path: str | Path) -> Path:
    """Write the PEFT adapter in `adapter_dir` as a GGUF LoRA for `base_gguf`; returns `out_path`."""
    import gguf

    from localllm.llm.catalog import BASE_FILE_KEY
    from localllm.llm.gguf_header import read_header

    adapter_dir, base_gguf, out_path = Path(adapter_dir), Path(base_gguf), Path(out_path)
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{adapter_dir} holds no readable PEFT adapter_config.json: {e}") from e
    if config.get("peft_type") != "LORA":
        raise ExportError(f"{adapter_dir} is a {config.get('peft_type')} adapter, not LoRA")
    if config.get("use_dora") or config.get("use_rslora"):
        raise ExportError("DoRA and rsLoRA adapters can't be written as a llama.cpp LoRA")
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise ExportError(f"{adapter_dir} has no adapter_model.safetensors")

    meta = read_header(base_gguf).metadata
    arch_name = meta.get("general.architecture")
    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name), None)
    if arch is None:
        raise ExportError(f"{base_gguf.name}: unknown architecture {arch_name!r}")
    n_blocks = int(meta[f"{arch_name}.block_count"])
    n_head = int(meta[f"{arch_name}.attention.head_count"])
    n_head_kv = int(meta.get(f"{arch_name}.attention.head_count_kv", n_head))
    names = gguf.TensorNameMap(arch, n_blocks)

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in _float32_tensors(weights_file).items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise ExportError(f"the adapter has a tensor llama.cpp LoRA can't hold: {key}")
        pairs.setdefault(match.group(1), {})[match.group(2)] = value
    if not pairs:
        raise ExportError(f"{adapter_dir} holds no LoRA weights")

    tensors: list[tuple[str, np.ndarray]] = []
    for hf_name, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise ExportError(f"{hf_name}: lora_A or lora_B missing")
        name = names.get_name(hf_name)
        if name is None:
            raise ExportError(f"{hf_name} has no GGUF name for {arch_name}")
        a, b = pair["A"], pair["B"]
        if arch_name in _PERMUTED_QK and name.endswith((".attn_q", ".attn_k")):
            b = _permute(b, n_head, n_head if name.endswith(".attn_q") else n_head_kv)
        tensors += [(f"{name}.weight.lora_a", a), (f"{name}.weight.lora_b", b)]

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch_name)
        writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
        writer.add_string(BASE_FILE_KEY, base_gguf.name)
        for name, data in tensors:
            writer.add_tensor(name, np.ascontiguousarray(data))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path


def _float32_tensors(weights_file: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as float32, whatever it was saved in: fp32, fp16 or bf16
    (QLoRA with bf16 saves bf16, which numpy has no type for, so torch reads the file)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as e:
        raise ExportError(f"{weights_file} can't be read: {e}") from e
    out = {}
    for key, value in tensors.items():
        if not value.is_floating_point():
            raise ExportError(f"{weights_file.name}: {key} holds {value.dtype}, not float weights")
        out[key] = value.to(torch.float32).numpy()
    return out


def _permute(rows: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, on the output rows of `rows`."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
        .swapaxes(1, 2)
        .reshape(rows.shape)
    )
