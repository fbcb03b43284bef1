"""A rough memory and time estimate for a run, shown before the user presses Train.

Calibrated on this project's CPU measurements (bench/finetune.py: SmolLM2-135M, bf16 autocast,
2-core machine); other machines and models scale roughly with parameters and tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from localllm.errors import ModelLoadError
from localllm.finetune.data import Example
from localllm.format import human_size

BASELINE_BYTES = 520 * 2**20  # torch + transformers + peft + trl imported, nothing loaded
CPU_TOKENS_PER_S_135M = 120.0  # trained tokens per second, LoRA, 135M parameters, 2 free cores
BASE_COPY_S_135M = 45.0  # the first run on a base: the GGUF dequantized and saved as an HF copy
QLORA_SLOWDOWN = 1.5  # 4-bit weights dequantized on every pass, and activation checkpointing
WEIGHT_BYTES_PER_PARAM = {"lora": 4.0, "qlora": 0.9}  # qlora: 4-bit layers, bf16 embeddings
# activations kept for the backward pass, per token of a step and parameter (fitted; QLoRA
# recomputes them from checkpoints)
ACTIVATION_BYTES = {"lora": 0.023, "qlora": 0.011}


@dataclass(frozen=True)
class Estimate:
    peak_bytes: int
    seconds: float  # training and, on a base's first run, preparing it
    tokens_per_step: int
    copy_seconds: float = 0.0  # of `seconds`: the first run's copy of the base

    def describe(self) -> str:
        def span(seconds: float) -> str:
            return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"

        copy = (
            f", {span(self.copy_seconds)} of it preparing the base (first run only)"
            if self.copy_seconds
            else ""
        )
        return (
            f"about {human_size(self.peak_bytes)} of memory and {span(self.seconds)} on a small "
            f"CPU{copy} (~{self.tokens_per_step} tokens a step; rough, a GPU is much faster)"
        )


def estimate(
    parameters: int,
    *,
    method: str,
    steps: int,
    batch_size: int,
    mean_tokens: float,
    max_length: int,
    base_cached: bool = True,
    four_bit: bool = False,
) -> Estimate:
    """Peak memory and time for `steps` steps of `batch_size` examples, plus the copy of the base
    that a base's first run makes (`base_cached` False); `four_bit`: a DPO run over a 4-bit base."""
    tokens_per_step = int(batch_size * min(mean_tokens, max_length))
    kind = "qlora" if method == "qlora" or four_bit else "lora"
    weight_bytes = parameters * WEIGHT_BYTES_PER_PARAM[kind]
    activations = tokens_per_step * parameters * ACTIVATION_BYTES[kind]
    rate = CPU_TOKENS_PER_S_135M * 135e6 / max(parameters, 1)
    if kind == "qlora":
        rate /= QLORA_SLOWDOWN
    copy = 0.0 if base_cached else BASE_COPY_S_135M * max(parameters, 1) / 135e6
    return Estimate(
        peak_bytes=int(BASELINE_BYTES + weight_bytes + activations),
        seconds=steps * tokens_per_step / rate + copy,
        tokens_per_step=tokens_per_step,
        copy_seconds=copy,
    )


def token_stats(
    base_gguf: str | Path, examples: Sequence[Example], max_length: int
) -> tuple[float, int]:
    """(mean tokens per example, how many are longer than `max_length` and will be cut), counted
    with the base model's own tokenizer on the text its chat template makes."""
    from llama_cpp import Llama

    from localllm.finetune.data import render
    from localllm.finetune.template import template_from_gguf

    if not examples:
        return 0.0, 0
    try:
        vocab = Llama(model_path=str(base_gguf), vocab_only=True, verbose=False)
    except (ValueError, RuntimeError, OSError) as e:
        raise ModelLoadError(
            f"llama.cpp can't read the tokenizer of {Path(base_gguf).name}: {e}"
        ) from e
    try:
        template = template_from_gguf(base_gguf)
        counts = [
            len(vocab.tokenize(render(e, template).encode("utf-8"), add_bos=False, special=True))
            for e in examples
        ]
    finally:
        vocab.close()
    return sum(counts) / len(counts), sum(1 for n in counts if n > max_length)
