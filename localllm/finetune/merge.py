"""Merge a GGUF LoRA adapter (as export.py writes it) into its base GGUF, so the result runs without
the adapter: `merge_lora_gguf(base, lora, out)`.

Every tensor of the base is dequantized; those the adapter touches get `alpha / rank * (B @ A)` added,
as llama.cpp applies the adapter at run time. Matrices are written as F16 and 1-D tensors (norms) as
F32, with all of the base's metadata, so llama.cpp's quantizer can then turn the file into Q8_0 or
Q4_K_M uniformly. The output appears all at once (temp file + os.replace) or not at all.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from localllm.finetune.export import ExportError
from localllm.finetune.names import QUANT_CHOICES

if TYPE_CHECKING:
    import gguf

    from localllm.llm.gguf_header import GGUFHeader, TensorInfo

# llama_ftype values (llama.h) for the quantized choices
_FTYPES = {"Q8_0": 7, "Q4_K_M": 15}
# upper bounds in bits per weight; Q4_K_M falls back to larger types where rows aren't 256-aligned
_BITS_PER_WEIGHT = {"Q8_0": 8.5, "Q4_K_M": 8.5}
# share of the progress bar the F16 pass takes when a quantize step follows
_MERGE_SHARE = 0.7
_MB = 1024 * 1024

Progress = Callable[[float, str], None]


class ExportCancelled(ExportError):
    """The user cancelled the merge; nothing was written."""


def merge_lora_gguf(
    base_gguf: Path,
    lora_gguf: Path,
    out_path: Path,
    *,
    quant: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Write `base_gguf` with the LoRA of `lora_gguf` merged in to `out_path` (F16, or `quant`)."""
    quant_name = _quant_name(quant)
    base_gguf, lora_gguf, out_path = Path(base_gguf), Path(lora_gguf), Path(out_path)
    if out_path.resolve() in (base_gguf.resolve(), lora_gguf.resolve()):
        raise ExportError(f"{out_path.name}: the merged model can't overwrite its own inputs")
    header = _read_header(base_gguf)
    deltas = _lora_deltas(header, _read(lora_gguf, "LoRA adapter"), lora_gguf.name)

    f16_bytes = sum(_out_dtype(t).itemsize * t.n_elements for t in header.tensors)
    need = header.data_offset + f16_bytes
    if quant_name in _FTYPES:
        n_weights = sum(t.n_elements for t in header.tensors)
        need += header.data_offset + int(n_weights * _BITS_PER_WEIGHT[quant_name] / 8)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    check_disk_space(out_path.parent, need)

    report = progress or (lambda fraction, message: None)
    share = _MERGE_SHARE if quant_name in _FTYPES else 1.0
    temps: list[Path] = []
    try:
        merged = _temp_beside(out_path, temps)
        # GGUFReader decodes every vocabulary string (seconds): only once the checks have passed
        base = _read(base_gguf, "base model")
        _write_merged(base, deltas, merged, report, cancel, share)
        final = merged
        if quant_name in _FTYPES:
            _check_cancel(cancel)
            report(share, f"quantizing to {quant_name}")
            final = _temp_beside(out_path, temps)
            _quantize(merged, final, quant_name)
            _check_cancel(cancel)
        os.chmod(final, 0o644)  # mkstemp makes it owner-only
        os.replace(final, out_path)
    finally:
        for path in temps:
            path.unlink(missing_ok=True)
    report(1.0, f"wrote {out_path.name}")
    return out_path


def check_disk_space(folder: Path, need_bytes: int) -> None:
    """Raise ExportError unless `folder`'s file system has `need_bytes` free."""
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise ExportError(
            f"not enough disk space: need {need_bytes // _MB} MB, {free // _MB} MB free in {folder}"
        )


def _quant_name(quant: str | None) -> str:
    name = (quant or "F16").upper()
    if name not in QUANT_CHOICES:
        raise ExportError(
            f"unknown quantization {quant!r}: choose one of {', '.join(QUANT_CHOICES)}"
        )
    return name


def _read(path: Path, what: str) -> gguf.GGUFReader:
    import gguf

    try:
        return gguf.GGUFReader(path)
    except (OSError, ValueError) as e:
        raise ExportError(f"{path.name} is not a readable GGUF {what}: {e}") from e


def _read_header(path: Path) -> GGUFHeader:
    from localllm.llm.gguf_header import read_header

    try:
        return read_header(path)
    except (OSError, ValueError) as e:
        raise ExportError(f"{path.name} is not a readable GGUF base model: {e}") from e


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return field.contents() if field is not None else None


def _lora_deltas(
    base: GGUFHeader, lora: gguf.GGUFReader, lora_name: str
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Base tensor name -> (A, B, scale), checked against the base's tensors."""
    from gguf.quants import dequantize

    if _field(lora, "general.type") != "adapter" or _field(lora, "adapter.type") != "lora":
        raise ExportError(f"{lora_name} is not a GGUF LoRA adapter")
    base_arch = base.metadata.get("general.architecture")
    lora_arch = _field(lora, "general.architecture")
    if lora_arch != base_arch:
        raise ExportError(
            f"{lora_name} is a LoRA for {lora_arch!r}, the base model is {base_arch!r}"
        )
    base_shapes = {t.name: tuple(reversed(t.shape)) for t in base.tensors}

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for t in lora.tensors:
        target, _, part = t.name.rpartition(".")
        if part not in ("lora_a", "lora_b"):
            raise ExportError(f"{lora_name}: {t.name} is not a LoRA tensor")
        pairs.setdefault(target, {})[part] = dequantize(t.data, t.tensor_type)
    if not pairs:
        raise ExportError(f"{lora_name} holds no LoRA tensors")

    alpha = float(_field(lora, "adapter.lora.alpha") or 0.0)
    deltas: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    for target, pair in pairs.items():
        if set(pair) != {"lora_a", "lora_b"}:
            raise ExportError(f"{lora_name}: {target} lacks its lora_a or lora_b")
        if target not in base_shapes:
            raise ExportError(f"{lora_name}: {target} is not a tensor of the base model")
        a, b = pair["lora_a"], pair["lora_b"]
        shape = base_shapes[target]
        if (
            a.ndim != 2
            or b.ndim != 2
            or a.shape[0] != b.shape[1]
            or shape != (b.shape[0], a.shape[1])
        ):
            raise ExportError(
                f"{lora_name}: {target} LoRA shapes {b.shape} x {a.shape} don't fit the base's {shape}"
            )
        rank = a.shape[0]
        # llama.cpp's rule: no alpha (0) means scale 1
        deltas[target] = (a, b, alpha / rank if alpha else 1.0)
    return deltas


def _out_dtype(tensor: gguf.ReaderTensor | TensorInfo) -> np.dtype:
    return np.dtype(np.float32 if len(tensor.shape) == 1 else np.float16)


def _write_merged(
    base: gguf.GGUFReader,
    deltas: dict[str, tuple[np.ndarray, np.ndarray, float]],
    path: Path,
    report: Progress,
    cancel: threading.Event | None,
    share: float,
) -> None:
    import gguf
    from gguf.quants import dequantize

    arch = str(_field(base, "general.architecture"))
    writer = gguf.GGUFWriter(path, arch)
    try:
        for field in base.fields.values():
            name = field.name
            # the writer writes these itself; file_type changes with the tensor types
            if name.startswith("GGUF.") or name in (
                gguf.Keys.General.ARCHITECTURE,
                gguf.Keys.General.FILE_TYPE,
                gguf.Keys.General.ALIGNMENT,
            ):
                continue
            vtype = field.types[0]
            sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), vtype, sub_type=sub_type)
        alignment = _field(base, gguf.Keys.General.ALIGNMENT)
        if isinstance(alignment, int):
            writer.add_custom_alignment(alignment)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

        for t in base.tensors:
            dtype = _out_dtype(t)
            shape = tuple(int(n) for n in reversed(t.shape))
            writer.add_tensor_info(t.name, shape, dtype, int(t.n_elements) * dtype.itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()

        total = len(base.tensors)
        for i, t in enumerate(base.tensors):
            _check_cancel(cancel)
            weights = dequantize(t.data, t.tensor_type).reshape(
                tuple(int(n) for n in reversed(t.shape))
            )
            if t.name in deltas:
                a, b, scale = deltas[t.name]
                weights = weights + scale * (b @ a)
            writer.write_tensor_data(np.ascontiguousarray(weights, dtype=_out_dtype(t)))
            report(share * (i + 1) / total, f"merged {t.name}")
    finally:
        writer.close()


def _quantize(src: Path, dst: Path, quant_name: str) -> None:
    import llama_cpp

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _FTYPES[quant_name]
    params.nthread = os.cpu_count() or 1
    # llama-cpp-python prints llama.cpp's log (a line per tensor) unless its logger says otherwise
    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        rc = llama_cpp.llama_model_quantize(
            os.fsencode(src), os.fsencode(dst), ctypes.byref(params)
        )
    finally:
        log.setLevel(level)
    if rc != 0:
        raise ExportError(
            f"llama.cpp could not quantize the merged model to {quant_name} (code {rc})"
        )


def _temp_beside(out_path: Path, temps: list[Path]) -> Path:
    fd, name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    os.close(fd)
    temps.append(Path(name))
    return temps[-1]


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise ExportCancelled("merge cancelled; nothing was written")
