"""The Hugging Face copy of a GGUF base model, which training needs (torch can't train a GGUF).

transformers reads a GGUF directly (`from_pretrained(dir, gguf_file=name)`), dequantizing it to float
and undoing llama.cpp's Q/K row permutation. That takes a while and the result can't be saved as
loaded (its GGUF quantizer says "not serializable"), so we clear the quantizer, save the plain float
model once under `cache_dir/<gguf stem>/`, and load that folder afterwards.

Imports torch and transformers: only the training process uses this module.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from localllm.errors import ModelLoadError

MARKER = "localllm-base.json"  # written last: a folder without it is an interrupted save


def hf_base(gguf_path: str | Path, cache_dir: str | Path) -> Path:
    """The folder of the HF copy of `gguf_path` (model + tokenizer), made on first use."""
    gguf_path = Path(gguf_path)
    cache_dir = Path(cache_dir)
    if not gguf_path.is_file():
        raise ModelLoadError(f"base model {gguf_path} does not exist")
    target = cache_dir / gguf_path.stem
    stat = gguf_path.stat()
    source = {"gguf": str(gguf_path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}
    if _valid(target, source):
        return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
    except Exception as e:  # transformers raises many kinds for unsupported architectures
        raise ModelLoadError(f"transformers can't load {gguf_path.name} for training: {e}") from e

    # the weights are already dequantized floats; the GGUF "quantizer" only blocks saving
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{gguf_path.stem}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(source), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _valid(target: Path, source: dict[str, object]) -> bool:
    try:
        saved = json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return saved == source


def own_memory(model: Any) -> None:
    """Copy the weights left as views of the fp32 file's memory map (with bf16 off nothing converts
    them) into memory of their own: the map is then released, and with it every page of the file
    read while quantizing, which would otherwise stay resident for the whole run."""
    import gc

    for tensor in [*model.parameters(), *model.buffers()]:
        if type(tensor).__name__ != "Params4bit":  # quantized: already its own
            tensor.data = tensor.data.clone()
    gc.collect()
