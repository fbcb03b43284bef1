"""The offline guard: applied once at start, before any library that phones home is imported."""

from __future__ import annotations

import logging
import os

from localllm.config import Settings

_TELEMETRY_OFF = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "UNSTRUCTURED_DISABLE_ANALYTICS": "true",
    "ORT_DISABLE_TELEMETRY": "1",  # read by onnxruntime's native code at import only
}
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def apply_privacy(settings: Settings) -> dict[str, str]:
    """Turn telemetry off and, unless downloads were opted in, forbid hub access.

    Returns the variables it set, so the caller can log or show them.
    """
    applied = dict(_TELEMETRY_OFF)
    if not settings.allow_downloads:
        applied.update(_OFFLINE)
    os.environ.update(applied)
    # on CPUs with AVX512-BF16 bitsandbytes tries to fetch a kernel from the Hub at import (only if
    # the `kernels` package is installed; we never install it) and warns on every start otherwise
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    return applied
