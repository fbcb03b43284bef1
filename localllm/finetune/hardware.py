"""What the training process takes of the machine: torch threads and bf16 autocast."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def training_threads() -> int:
    """Torch threads: the cores that are free now. Torch's threads wait on each other every op, so
    one that shares its core with a busy program stalls them all (measured on 2 cores: two threads
    are 1.5x faster than one when idle, ~10x slower when the app or llama.cpp is busy)."""
    from localllm.cpu import available_cores

    cores = available_cores()
    return max(1, min(cores, cores - round(_busy_cores())))


def _busy_cores(window_s: float = 0.5) -> float:
    """How many cores other programs keep busy right now (Linux /proc/stat; else the load average,
    which lags by a minute)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = sample()
        time.sleep(window_s)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
    elapsed = total1 - total0
    if elapsed <= 0:
        return 0.0
    return (1 - (idle1 - idle0) / elapsed) * (os.cpu_count() or 1)


BF16_CHOICES = ("auto", "on", "off")


def bf16_choice(setting: Any) -> str:
    """A config's bf16 value as one of BF16_CHOICES (older runs stored true/false)."""
    if isinstance(setting, bool):
        return "on" if setting else "off"
    return "auto" if setting is None else str(setting).lower()


def native_bf16(torch: Any) -> bool:
    """Whether this CPU or GPU computes bfloat16 natively (AVX512-BF16 or AMX on a CPU)."""
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return bool(
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )


def use_bf16(setting: Any, torch: Any) -> bool:
    """Autocast to bfloat16 when "on", never when "off", and ("auto") where the hardware computes
    it natively: 1.3x faster than fp32 on an AVX512-BF16 CPU (measured), slower where it is
    emulated (an AVX2 laptop), which then trains in fp32."""
    choice = bf16_choice(setting)
    if choice not in BF16_CHOICES:
        raise ValueError(f"bf16 must be one of {', '.join(BF16_CHOICES)}, not {setting!r}")
    return choice == "on" or (choice == "auto" and native_bf16(torch))
