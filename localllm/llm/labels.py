"""A model's file name as a picker shows it: short enough to read whole in a narrow list."""

from __future__ import annotations

LABEL_LENGTH = 30  # characters: what the Chat tab's model list shows without cutting
ADAPTER = ".lora.gguf"
RUN = "--"  # a tuned model's file is <base>--<run>.lora.gguf (or .<QUANT>.gguf, merged)


def short_model_name(name: str, limit: int = LABEL_LENGTH) -> str:
    """`name` short enough to read whole: without a model's `.gguf` (an adapter keeps
    `.lora.gguf`, which says what it is); a tuned model by its run first, its base after where
    that fits; cut in the middle when still longer than `limit`, so that both ends stay."""
    shown = name if name.endswith(ADAPTER) else name.removesuffix(".gguf")
    if RUN in shown:
        base, run = shown.split(RUN, 1)
        run = run.replace(f"-lora{ADAPTER}", ADAPTER)  # a run id ends in -lora already
        shown = f"{run} · {base}" if len(run) + len(base) + 3 <= limit else run
    if len(shown) <= limit:
        return shown
    tail = max(limit * 2 // 5, 1)
    return f"{shown[: max(limit - tail - 1, 1)]}…{shown[-tail:]}"
