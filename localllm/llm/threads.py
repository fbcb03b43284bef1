"""How many threads llama.cpp gets, and how its OpenMP workers wait (see bench/chat.py)."""

from __future__ import annotations

import os

from localllm.cpu import available_cores


def default_threads() -> int:
    """Generation threads: all cores but one, so another busy program can't stall every worker.

    Measured on 2 cores: 2 spinning threads give 104 tok/s idle but 26 tok/s when the other core is
    busy; 1 thread gives 70 idle and 70 busy.
    """
    return max(1, available_cores() - 1)


def default_batch_threads() -> int:
    """Prompt-processing threads: every core; big batches gain from them even on a busy machine."""
    return available_cores()


def apply_openmp_wait_policy() -> None:
    """With one generation thread, OpenMP threads only meet on prompt batches: let them sleep.

    Sleeping instead of spinning keeps prompt speed when another program holds a core (measured:
    TTFT 3.3 s passive vs 3.8 s spinning when busy; 1.8 vs 1.7 s idle). With several generation
    threads passive waits cost a lot per token, so the OpenMP default is left alone there. A value the
    user set wins.
    """
    if default_threads() == 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
