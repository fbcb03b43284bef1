"""How much a run forgot of what the base knew: perplexity on a short general text shipped with the
app (data/general.txt), and a few general questions answered by the base and the tuned model.

A run that teaches its examples too hard (validation loss near zero) can start answering every
question with them; these figures, read side by side, show when that happened.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

GENERAL_TEXT = Path(__file__).with_name("data") / "general.txt"
# (question, words one of which a correct answer holds); the bundled 135M model answers these
GENERAL_PROMPTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("paris",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What do plants need from the sun to make their food?", ("light", "energy")),
    ("At what temperature in Celsius does water boil at sea level?", ("100", "hundred")),
)
# general perplexity up by more than this factor is reported as forgetting (bench/README.md)
PERPLEXITY_RISE_WARNING = 1.25
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
    lost = [g["prompt"] for g in general if g.get("base_knew") and not g.get("tuned_knows")]
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
            f"the tuned model no longer answers {len(lost)} of {len(general)} general questions "
            f"the base answered (e.g. {lost[0]!r}); fewer steps or a lower learning rate forget less"
        )
    return warnings
