"""Real GGUF files for tests, written with the gguf library from the bundled model."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from gguf.scripts.gguf_new_metadata import copy_with_new_metadata


def copy_without_chat_template(src: Path, dst: Path) -> Path:
    """The same weights with the chat template removed: a model that needs the fallback format."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    copy_with_new_metadata(reader, writer, {}, [gguf.Keys.Tokenizer.CHAT_TEMPLATE])
    return dst


def write_lora_adapter(
    dst: Path,
    base_header_path: Path,
    *,
    rank: int = 4,
    scale: float = 0.0,
    base_name: str = "smollm2",
) -> Path:
    """A LoRA adapter for the attention query projections of every layer of a llama-architecture model.

    With scale 0 the B matrices are zero and the adapter changes nothing; otherwise it perturbs the model.
    """
    from localllm.llm.gguf_header import read_header

    header = read_header(base_header_path)
    writer = gguf.GGUFWriter(dst, arch="llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    writer.add_string("general.base_model.0.name", base_name)
    writer.add_uint32("general.base_model.count", 1)
    rng = np.random.default_rng(0)
    for t in header.tensors:
        if not t.name.endswith("attn_q.weight"):
            continue
        n_in, n_out = t.shape  # ggml order: ne[0] is the input dimension
        a = rng.standard_normal((rank, n_in)).astype(np.float32) * 0.02
        b = rng.standard_normal((n_out, rank)).astype(np.float32) * scale
        writer.add_tensor(f"{t.name}.lora_a", a)
        writer.add_tensor(f"{t.name}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst
