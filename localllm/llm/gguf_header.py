"""Fast read of a GGUF file's header: metadata and tensor table, without the tensor data.

gguf.GGUFReader builds a numpy view per vocabulary string (4 s for a 49k-token vocab here), too slow to
list a folder of models. This reader walks the same layout with struct over an mmap, using the gguf
library's own type tables, skips large arrays instead of decoding them, and checks that every tensor's
bytes lie inside the file, so a truncated download is caught here rather than inside llama.cpp.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

_SCALAR = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_MAX_ARRAY_KEPT = 64  # longer arrays (vocabularies, merges) are skipped, only their length kept


class GGUFFormatError(ValueError):
    """The file is not a readable GGUF; the message says where and why."""


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    qtype: GGMLQuantizationType
    offset: int
    n_bytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    file_size: int = 0


class _Cursor:
    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise GGUFFormatError(f"file ends at byte {self.size} inside the header (truncated)")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > self.size:
            raise GGUFFormatError(f"a {n}-byte string runs past the end of the file (truncated)")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.unpack("<Q")
        self.pos += n

    def value(self, vtype: int) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            raise GGUFFormatError("nested array where a scalar was expected")
        try:
            return self.unpack(_SCALAR[GGUFValueType(vtype)])
        except (KeyError, ValueError) as e:
            raise GGUFFormatError(f"unknown metadata value type {vtype}") from e

    def array(self) -> tuple[list[Any] | None, int]:
        item_type = self.unpack("<I")
        count = self.unpack("<Q")
        if count <= _MAX_ARRAY_KEPT:
            return [self.value(item_type) for _ in range(count)], count
        if item_type == GGUFValueType.STRING:
            for _ in range(count):
                self.skip_string()
                if self.pos > self.size:
                    raise GGUFFormatError("a string array runs past the end of the file")
        else:
            try:
                self.pos += count * struct.calcsize(_SCALAR[GGUFValueType(item_type)])
            except (KeyError, ValueError) as e:
                raise GGUFFormatError(f"unknown array item type {item_type}") from e
        return None, count


def _tensor_bytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n = 1
    for d in shape:
        n *= d
    return n // block_size * type_size


def read_header(path: str | Path) -> GGUFHeader:
    """Read metadata and tensor table; raise GGUFFormatError with a reason if the file is broken."""
    path = Path(path)
    size = path.stat().st_size
    if size < 24:
        raise GGUFFormatError(f"only {size} bytes: too small to be a GGUF file")
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cur = _Cursor(buf, size)
        magic = cur.unpack("<I")
        if magic != GGUF_MAGIC:
            raise GGUFFormatError(f"not a GGUF file (starts with {bytes(buf[:4])!r})")
        version = cur.unpack("<I")
        if version not in (2, 3):
            raise GGUFFormatError(f"unsupported GGUF version {version}")
        n_tensors = cur.unpack("<Q")
        n_kv = cur.unpack("<Q")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise GGUFFormatError("implausible header counts: the file is corrupt")

        header = GGUFHeader(version=version, metadata={}, file_size=size)
        for _ in range(n_kv):
            key = cur.string()
            vtype = cur.unpack("<I")
            if vtype == GGUFValueType.ARRAY:
                items, count = cur.array()
                header.array_lengths[key] = count
                if items is not None:
                    header.metadata[key] = items
            else:
                header.metadata[key] = cur.value(vtype)

        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.unpack("<I")
            shape = tuple(cur.unpack("<Q") for _ in range(n_dims))
            raw_type = cur.unpack("<I")
            try:
                qtype = GGMLQuantizationType(raw_type)
            except ValueError as e:
                raise GGUFFormatError(f"tensor {name!r} has unknown type {raw_type}") from e
            offset = cur.unpack("<Q")
            header.tensors.append(
                TensorInfo(name, shape, qtype, offset, _tensor_bytes(shape, qtype))
            )

    alignment = int(header.metadata.get("general.alignment", 32))
    header.data_offset = cur.pos + (-cur.pos % alignment)
    if header.tensors:
        end = header.data_offset + max(t.offset + t.n_bytes for t in header.tensors)
        if end > size:
            missing = end - size
            raise GGUFFormatError(
                f"truncated: tensor data needs {end} bytes but the file has {size} "
                f"({missing} missing; an interrupted download or copy?)"
            )
    return header


def token_texts(path: Path, wanted: set[int]) -> dict[int, str]:
    """The text of a few token ids from the GGUF's vocabulary; {} if it can't be read cheaply."""
    if not wanted:
        return {}
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            cur = _Cursor(buf, len(buf))
            if cur.unpack("<I") != GGUF_MAGIC:
                return {}
            cur.unpack("<I")  # version
            cur.unpack("<Q")  # tensors
            for _ in range(cur.unpack("<Q")):
                key = cur.string()
                vtype = cur.unpack("<I")
                if vtype != GGUFValueType.ARRAY:
                    cur.value(vtype)
                elif key != "tokenizer.ggml.tokens":
                    cur.array()
                else:
                    if cur.unpack("<I") != GGUFValueType.STRING:
                        return {}
                    count, last = cur.unpack("<Q"), max(wanted)
                    found: dict[int, str] = {}
                    for i in range(min(count, last + 1)):
                        if i in wanted:
                            found[i] = cur.string()
                        else:
                            cur.skip_string()
                    return found
    except (OSError, ValueError, GGUFFormatError):
        return {}
    return {}
