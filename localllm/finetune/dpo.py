"""DPO over the same (Q)LoRA machinery as supervised runs (train.py): the pairs rendered with the
base GGUF's own chat template, and TRL's DPOTrainer; with four_bit the base is loaded in 4 bits.

With a LoRA adapter the reference model is the base itself (TRL disables the adapter for the
reference log-probabilities), so DPO costs no second copy of the model. A pair is trained on as
prompt (the template up to the answer) and two completions, each ending on the template's EOS.
"""

from __future__ import annotations

from typing import Any

from localllm.errors import DatasetError
from localllm.finetune.data import Example, render, split
from localllm.finetune.preferences import PreferencePair, load_pairs
from localllm.finetune.train_config import TrainConfig

Row = dict[str, str]


def dpo_rows(config: TrainConfig) -> tuple[list[Row], list[Row]]:
    """(train rows, validation rows) of {"prompt", "chosen", "rejected"} text, split as the chosen
    answers would be (compare.held_out_prompts answers the same validation prompts)."""
    from localllm.finetune.template import template_for

    pairs = load_pairs(config.data).pairs
    template = template_for(config.base_gguf, config.base_hf)
    eos = str(getattr(template, "eos_token", "") or "")
    examples = [p.chosen_example() for p in pairs]
    train, validation = split(examples, float(config.validation_fraction), int(config.seed))
    by_example = {id(e): p for e, p in zip(examples, pairs, strict=True)}

    def rows(part: list[Example]) -> list[Row]:
        return [pair_row(by_example[id(e)], template, eos) for e in part]

    return rows(train), rows(validation)


def pair_row(pair: PreferencePair, template: Any, eos: str = "") -> Row:
    """The pair as the chat renders it: one shared prompt, and each answer after it."""
    prompt, chosen = _split(pair.prompt, pair.chosen, template, eos)
    other, rejected = _split(pair.prompt, pair.rejected, template, eos)
    if other != prompt:  # a template whose prompt depends on the answer: can't share one
        raise DatasetError(f"the chat template renders the question {pair.prompt[:40]!r} two ways")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _split(question: str, answer: str, template: Any, eos: str) -> tuple[str, str]:
    example = Example(
        messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    )
    full = render(example, template)
    if eos and full.rstrip().endswith(eos):
        full = full.rstrip()  # llama.cpp stops at EOS: the "\n" after it is never generated
    at = full.rfind(answer)
    if at <= 0:
        raise DatasetError(f"the chat template rewrites the answer to {question[:40]!r}")
    return full[:at], full[at:]


def dpo_trainer(
    config: TrainConfig,
    model: Any,
    tokenizer: Any,
    rows: tuple[list[Row], list[Row]],
    common: dict[str, Any],
    callbacks: list[Any],
    peft_config: Any,
) -> Any:
    """TRL's DPOTrainer; `common` holds the TrainingArguments every method shares (train.py)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    fields = DPOConfig.__dataclass_fields__
    extra = {"precompute_ref_log_probs": False, "disable_dropout": True}
    args = DPOConfig(
        **common,
        **{k: v for k, v in extra.items() if k in fields},
        beta=float(config.beta),
        max_length=int(config.max_length),
        # as in SFT runs: LoRA on a small model is speed over memory, a 4-bit base memory first
        gradient_checkpointing=config.quantized,
    )
    train_rows, validation_rows = rows
    return DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(validation_rows) if validation_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def reward_summary(history: list[dict[str, Any]]) -> dict[str, float]:
    """The last held-out preference accuracy and reward margin the trainer measured, if any:
    the share of held-out pairs where the tuned model prefers the chosen answer more than the base
    does, and by how much (beta times the log-probability ratios)."""
    found: dict[str, float] = {}
    for row in reversed(history):
        for key, name in (
            ("eval_rewards/accuracies", "preference_accuracy"),
            ("eval_rewards/margins", "reward_margin"),
        ):
            if key in row and name not in found:
                found[name] = float(row[key])
    return found
