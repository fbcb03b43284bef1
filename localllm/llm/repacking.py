"""Whether llama.cpp repacks weights for this CPU's matrix kernels (AMX, AVX2/AVX512 layouts).

Repacking is llama.cpp's default and speeds up prompts. On CPUs that report AMX, its AMX kernels
have been seen to crash the process at the first prompt (a general-protection fault on
`ldtilecfg`, in a VM that grants the AMX permission). So on such CPUs "auto" first decodes a short
prompt in a child process; if that child dies, repacking stays off. `LOCALLLM_LLAMA_REPACK=on|off`
forces either branch. The answer is kept per llama.cpp build and CPU in the user's cache folder.

llama-cpp-python's `Llama` has no argument for it, so the choice is made where `Llama` reads its
model defaults (`llama_model_default_params`), once per process, before the first model loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "LOCALLLM_LLAMA_REPACK"
CHOICES = ("auto", "on", "off")
PROBE_SECONDS = 120

# Loads `argv[1]` with repacking on and decodes one prompt long enough for the matrix kernels.
PROBE = """
import sys
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_batch=64, verbose=False)
tokens = llm.tokenize(("The quick brown fox jumps over the lazy dog. " * 6).encode())
llm.eval(tokens[:60])
print("ok")
"""


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def has_amx(flags: set[str] | None = None) -> bool:
    return any(f.startswith("amx") for f in (cpu_flags() if flags is None else flags))


def choice() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV} must be one of {', '.join(CHOICES)}, not {value!r}")
    return value


def probe(model_path: Path, python: str = sys.executable) -> bool:
    """True when a child process decodes a prompt with repacking on and exits cleanly."""
    try:
        done = subprocess.run(
            [python, "-c", PROBE, str(model_path)],
            capture_output=True,
            text=True,
            timeout=PROBE_SECONDS,
            env={**os.environ, ENV: "on"},
        )
    except subprocess.TimeoutExpired:
        return False
    if done.returncode != 0:
        log.warning(
            "llama.cpp's repacked kernels failed on this CPU (exit %s); repacking is off",
            done.returncode,
        )
    return done.returncode == 0 and "ok" in done.stdout


def _cache_file(flags: set[str]) -> Path:
    import llama_cpp

    key = f"{llama_cpp.__version__} {' '.join(sorted(flags))}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home / "localllm" / f"llama-repack-{digest}.json"


def _probe_model() -> Path | None:
    from localllm.llm.catalog import bundled_model_path

    return bundled_model_path()


def decide(
    value: str,
    flags: set[str],
    run_probe: Callable[[Path], bool] = probe,
    model: Callable[[], Path | None] = _probe_model,
) -> bool:
    """Repack or not: forced by `value`, else on unless the CPU has AMX and the probe fails."""
    if value in ("on", "off"):
        return value == "on"
    if not has_amx(flags):
        return True
    cache = _cache_file(flags)
    try:
        return bool(json.loads(cache.read_text())["repack"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    path = model()
    works = run_probe(path) if path is not None else False
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"repack": works}))
    except OSError:
        pass
    return works


_decided: bool | None = None


def repacking() -> bool:
    """This process's choice, made once."""
    global _decided
    if _decided is None:
        _decided = decide(choice(), cpu_flags())
    return _decided


def install() -> None:
    """Make every `Llama` this process creates follow `repacking()`."""
    import llama_cpp.llama as llama_module

    low_level = llama_module.llama_cpp
    original = low_level.llama_model_default_params
    if getattr(original, "_localllm_repack", False):
        return

    def model_defaults() -> Any:
        params = original()
        params.use_extra_bufts = repacking()
        return params

    model_defaults._localllm_repack = True  # type: ignore[attr-defined]
    low_level.llama_model_default_params = model_defaults
