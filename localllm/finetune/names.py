"""What a run's files are called in the models folder, and the quantizations a merge offers.

<base>--<run>.lora.gguf     the adapter, which llama.cpp applies over the base GGUF
<base>--<run>.<QUANT>.gguf  the adapter merged into the base, QUANT one of QUANT_CHOICES
"""

from __future__ import annotations

from pathlib import Path

QUANT_CHOICES = ("F16", "Q8_0", "Q4_K_M")


def run_stem(base_gguf: str | Path, run_id: str) -> str:
    return f"{Path(base_gguf).name.removesuffix('.gguf')}--{run_id}"


def adapter_file_name(base_gguf: str | Path, run_id: str) -> str:
    return f"{run_stem(base_gguf, run_id)}.lora.gguf"


def merged_file_name(base_gguf: str | Path, run_id: str, quant: str) -> str:
    return f"{run_stem(base_gguf, run_id)}.{quant.upper()}.gguf"
