"""Exporting or merging a finished run into the models folder (named as names.py says)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from localllm.config import Settings
from localllm.errors import LocalLLMError
from localllm.files import ensure_dir
from localllm.finetune import jobs
from localllm.finetune.names import adapter_file_name, merged_beside


def export_run(
    settings: Settings,
    run_id: str,
    *,
    quant: str | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """The run's adapter as a GGUF LoRA in the models folder (written again unless merging reuses
    it), and with `quant`, merged into its base: {"run", "adapter_gguf", "merged_gguf"?, "quant"?}.
    """
    from localllm.finetune.export import export_lora_gguf

    info = jobs.run_info(settings, run_id)
    adapter = Path(info.path) / "adapter"
    if not (adapter / "adapter_model.safetensors").is_file():
        raise LocalLLMError(f"run {info.id} has no trained adapter yet (state: {info.state})")
    base_gguf = str(info.config["base_gguf"])
    models = ensure_dir(settings.models_dir)
    # the file name chosen when the run was made (its name, or its id), in today's models folder
    planned = info.config.get("adapter_gguf") or adapter_file_name(base_gguf, info.id)
    target = models / Path(str(planned)).name
    lora = Path(info.adapter_gguf or target)
    if not lora.is_file() or not quant:
        lora = export_lora_gguf(adapter, base_gguf, target)
    result: dict[str, Any] = {"run": info.id, "adapter_gguf": str(lora)}
    if quant:
        from localllm.finetune.merge import merge_lora_gguf

        out = lora.with_name(merged_beside(lora, quant))
        merged = merge_lora_gguf(Path(base_gguf), lora, out, quant=quant.upper(), progress=progress)
        result["merged_gguf"] = str(merged)
        result["quant"] = quant.upper()
    return result
