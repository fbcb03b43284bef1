"""What a run forgets of what the base knew, kept small and measured.

Kept small by rehearsal: the base answers general questions (data/rehearsal.txt) before training, and
those answers are mixed into the training examples, so the model keeps practising its own general
behaviour while it learns the user's examples ("learning without forgetting": the old model's outputs
as targets). Measured, on other text and questions than it rehearses: perplexity on a short general
text (data/general.txt), and a few general questions answered by the base and the tuned model. A run
that teaches its examples too hard can start answering every question with them; these figures,
read side by side, show when that happened.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from localllm.finetune.data import Example
from localllm.llm.base import Message

GENERAL_TEXT = Path(__file__).with_name("data") / "general.txt"
REHEARSAL_QUESTIONS = Path(__file__).with_name("data") / "rehearsal.txt"
# (question, words one of which a correct answer holds); the bundled 135M model answers these
GENERAL_PROMPTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("paris",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What do plants need from the sun to make their food?", ("light", "energy")),
    ("At what temperature in Celsius does water boil at sea level?", ("100", "hundred")),
)
# general perplexity up by more than this factor is reported as forgetting on its own; a smaller
# rise, with the general answers kept, is what a chat model tuned at the defaults shows (x1.4-1.5
# on bench/finetune_defaults.py, with and without rehearsal) and is not worth a warning alone
PERPLEXITY_RISE_WARNING = 2.0
NEAR_ZERO_LOSS = 0.05


def general_perplexity(model: Any, tokenizer: Any, torch: Any, window: int = 256) -> float:
    """Perplexity of `model` on the general text, in windows of `window` tokens."""
    text = GENERAL_TEXT.read_text(encoding="utf-8")
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(ids) - 1, window):
                chunk = ids[start : start + window].unsqueeze(0).to(model.device)
                if chunk.shape[1] < 2:
                    break
                loss = model(input_ids=chunk, labels=chunk).loss
                total += float(loss) * (chunk.shape[1] - 1)
                count += chunk.shape[1] - 1
    finally:
        model.train(was_training)
    return math.exp(min(total / max(count, 1), 50.0))


def knows(answer: str, expected: tuple[str, ...]) -> bool:
    lowered = answer.lower()
    return any(word in lowered for word in expected)


def forgetting_warnings(status: dict[str, Any], general: list[dict[str, Any]]) -> list[str]:
    """What the user should hear about forgetting, from a finished run's status and the general
    questions answered before and after (compare.general_answers)."""
    warnings = []
    before, after = status.get("general_perplexity_before"), status.get("general_perplexity_after")
    rise = after / before if before and after else None
    knew = [g for g in general if g.get("base_knew")]
    lost = [g["prompt"] for g in knew if not g.get("tuned_knows")]
    loss = status.get("eval_loss_after")
    if rise is not None and rise > PERPLEXITY_RISE_WARNING:
        memorised = loss is not None and loss < NEAR_ZERO_LOSS
        warnings.append(
            f"the tuned model is worse at general text (perplexity {before:.1f} -> {after:.1f}, "
            f"x{rise:.2f})"
            + (
                " and validation loss is near zero: it has memorised the examples"
                if memorised
                else ""
            )
            + "; fewer steps or a lower learning rate forget less"
        )
    if lost:
        warnings.append(
            f"the tuned model gets {len(lost)} of the {len(knew)} general questions the base "
            f"answered right wrong (e.g. {lost[0]!r}); fewer steps or a lower learning rate "
            "forget less"
        )
    return warnings


def rehearsal_examples(base_gguf: str | Path, count: int) -> list[Example]:
    """`count` general questions (at most the shipped list) with the base's own greedy answers."""
    from localllm.finetune.llama_answers import answer_all

    questions = [q for q in REHEARSAL_QUESTIONS.read_text(encoding="utf-8").splitlines() if q]
    questions = questions[: max(0, count)]
    if not questions:
        return []
    conversations: list[list[Message]] = [[{"role": "user", "content": q}] for q in questions]
    answers = answer_all(base_gguf, None, conversations, max_tokens=128)
    return [
        Example(messages=[*c, {"role": "assistant", "content": a}], source={"rehearsal": i + 1})
        for i, (c, a) in enumerate(zip(conversations, answers, strict=True))
        if a.strip()
    ]
