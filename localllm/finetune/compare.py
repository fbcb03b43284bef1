"""A few held-out prompts, and a few general questions (forgetting.GENERAL_PROMPTS), answered by the
base GGUF and by the base with the run's LoRA, side by side.

Both run in llama.cpp over the original quantized file, exactly as the chat tab will run them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localllm.finetune.data import Example, load_jsonl, split
from localllm.finetune.forgetting import GENERAL_PROMPTS, knows
from localllm.finetune.llama_answers import answer_all
from localllm.finetune.run_files import read_config, write_json
from localllm.finetune.train_config import TrainConfig
from localllm.llm.base import Message


def held_out_prompts(config: TrainConfig, count: int) -> list[Example]:
    """The first `count` chat examples of the validation split (training ones if it is empty)."""
    if config.method == "dpo":  # preference pairs: the question and the chosen answer
        from localllm.finetune.preferences import load_pairs

        loaded = load_pairs(config.data).as_dataset()
    else:
        loaded = load_jsonl(config.data)
    train, validation = split(loaded.examples, float(config.validation_fraction), int(config.seed))
    pool = [e for e in validation or train if e.messages and e.messages[-1]["role"] == "assistant"]
    return pool[:count]


def compare_answers(
    run_dir: Path, base_gguf: str | Path, lora: str | Path, count: int = 3, max_tokens: int = 96
) -> dict[str, list[dict[str, Any]]]:
    """Answer `count` held-out prompts and the general questions with and without the LoRA;
    saved as samples.json: {"samples": [...], "general": [...]}."""
    examples = held_out_prompts(read_config(run_dir), count)
    held_out: list[list[Message]] = [list(e.messages[:-1]) for e in examples if e.messages]
    general: list[list[Message]] = [[{"role": "user", "content": q}] for q, _ in GENERAL_PROMPTS]
    conversations = held_out + general
    base = answer_all(base_gguf, None, conversations, max_tokens)
    tuned = answer_all(base_gguf, lora, conversations, max_tokens)
    samples = []
    n = len(held_out)
    for example, before, after in zip(examples, base[:n], tuned[:n], strict=True):
        assert example.messages is not None
        samples.append(
            {
                "prompt": example.messages[-2]["content"] if len(example.messages) > 1 else "",
                "expected": example.messages[-1]["content"],
                "base": before,
                "tuned": after,
            }
        )
    answered = []
    for (question, expected), before, after in zip(
        GENERAL_PROMPTS, base[n:], tuned[n:], strict=True
    ):
        answered.append(
            {
                "prompt": question,
                "base": before,
                "tuned": after,
                "base_knew": knows(before, expected),
                "tuned_knows": knows(after, expected),
            }
        )
    result = {"samples": samples, "general": answered}
    write_json(run_dir / "samples.json", result)
    return result
