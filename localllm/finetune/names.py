"""What a run's files are called in the models folder, and the quantizations a merge offers.

<base>--<run>.lora.gguf     the adapter, which llama.cpp applies over the base GGUF
<base>--<run>.<QUANT>.gguf  the adapter merged into the base, QUANT one of QUANT_CHOICES

<run> is the name the user gave the run, made safe for a file name (`file_part`) and unique in
the models folder, else the run's id.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from localllm.errors import LocalLLMError

QUANT_CHOICES = ("F16", "Q8_0", "Q4_K_M")
MAX_NAME = 60  # characters of a run name kept in the file name
ADAPTER_SUFFIX = ".lora.gguf"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RunNameError(LocalLLMError):
    """A run name that leaves nothing usable in a file name."""


def clean_name(name: str | None) -> str:
    """The name as the user gave it, on one line, without outer spaces ("" for none)."""
    return " ".join((name or "").split())


def file_part(name: str) -> str:
    """`name` as it can stand in a file name: letters, digits, '.', '_' and '-' (runs of anything
    else become one '-'), no leading dots or dashes, at most MAX_NAME characters."""
    part = _UNSAFE.sub("-", clean_name(name)).strip(".-_")[:MAX_NAME].rstrip(".-_")
    if not part:
        raise RunNameError(
            f"the run name {name!r} has no letter or digit to name a file with: "
            "use letters, digits, '-', '_' or '.'"
        )
    return part


def run_stem(base_gguf: str | Path, run_id: str) -> str:
    return f"{Path(base_gguf).name.removesuffix('.gguf')}--{run_id}"


def adapter_file_name(base_gguf: str | Path, run_id: str) -> str:
    return f"{run_stem(base_gguf, run_id)}{ADAPTER_SUFFIX}"


def named_adapter_file(
    base_gguf: str | Path, run_id: str, name: str | None, taken: Collection[str] = ()
) -> str:
    """The adapter's file name: named after the run's `name` when it has one, with "-2", "-3"...
    added while the file name is `taken` (in the models folder, or planned by another run)."""
    if not clean_name(name):
        return adapter_file_name(base_gguf, run_id)
    part = file_part(str(name))
    candidate, n = adapter_file_name(base_gguf, part), 2
    while candidate in taken:
        candidate, n = adapter_file_name(base_gguf, f"{part}-{n}"), n + 1
    return candidate


def merged_beside(adapter_gguf: str | Path, quant: str) -> str:
    """The merged model's file name for an adapter file: the same stem, with the quantization."""
    stem = Path(adapter_gguf).name.removesuffix(ADAPTER_SUFFIX).removesuffix(".gguf")
    return f"{stem}.{quant.upper()}.gguf"
