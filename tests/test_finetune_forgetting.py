"""Forgetting is reported from the figures a run measured: general perplexity up, general questions
the base answered right and the tuned model no longer does."""

from __future__ import annotations

from localllm.finetune.forgetting import GENERAL_TEXT, forgetting_warnings, knows


def _general(base_knew: bool, tuned_knows: bool) -> dict[str, object]:
    return {
        "prompt": "What is the capital of France?",
        "base_knew": base_knew,
        "tuned_knows": tuned_knows,
    }


def test_no_warning_when_general_knowledge_is_kept() -> None:
    status = {
        "general_perplexity_before": 12.3,
        "general_perplexity_after": 12.9,
        "eval_loss_after": 0.01,
    }
    assert forgetting_warnings(status, [_general(True, True), _general(False, False)]) == []


def test_perplexity_rise_and_memorising_are_named() -> None:
    status = {
        "general_perplexity_before": 12.3,
        "general_perplexity_after": 26.8,
        "eval_loss_after": 0.01,
    }
    (warning,) = forgetting_warnings(status, [])
    assert "12.3 -> 26.8" in warning and "memorised" in warning


def test_a_lost_general_answer_is_named() -> None:
    status = {"general_perplexity_before": 12.3, "general_perplexity_after": 12.4}
    (warning,) = forgetting_warnings(
        status, [_general(True, False), _general(True, True), _general(False, False)]
    )
    assert "1 of the 2 general questions" in warning and "capital of France" in warning


def test_knows_and_the_shipped_text() -> None:
    assert knows("It is Paris, of course.", ("paris",)) and not knows("Lyon", ("paris",))
    assert len(GENERAL_TEXT.read_text(encoding="utf-8").split()) > 400
