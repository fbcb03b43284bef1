from __future__ import annotations

from pathlib import Path

import pytest

from localllm.config import Settings
from localllm.errors import ModelBusyError, PromptTooLongError
from localllm.llm.base import GenerationParams, GenerationStats, Message
from localllm.llm.context import fit_to_context, with_system
from localllm.llm.llamacpp import FALLBACK_TEMPLATE_WARNING, LlamaCppChatModel
from localllm.llm.manager import LoadOptions, ModelManager

GREEDY = GenerationParams(temperature=0.0, max_tokens=40, seed=1)


def ask(model: LlamaCppChatModel, text: str, params: GenerationParams = GREEDY) -> list[str]:
    return list(
        model.stream_chat(with_system([{"role": "user", "content": text}], "Be brief."), params)
    )


def test_streams_an_answer_from_real_llama_cpp(engine: LlamaCppChatModel) -> None:
    pieces = ask(engine, "What is the capital of France?")
    assert len(pieces) > 1, "the answer should arrive in pieces"
    answer = "".join(pieces)
    assert "Paris" in answer
    stats = engine.last_stats
    assert stats.completion_tokens == len(pieces)
    assert stats.prompt_tokens > 10
    assert 0 < stats.seconds_to_first_token <= stats.seconds_total


def test_uses_the_models_own_chat_template(engine: LlamaCppChatModel) -> None:
    assert engine.template_warning is None
    messages: list[Message] = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
    ]
    tokens, formatted = engine._render(messages)
    # SmolLM2's template (ChatML-style, from the GGUF metadata) ends with the assistant header.
    assert formatted.prompt.startswith("<|im_start|>system\nS<|im_end|>")
    assert formatted.prompt.rstrip().endswith("<|im_start|>assistant")
    assert engine.prompt_tokens(messages) == len(tokens)


def test_greedy_answers_are_repeatable_and_stop_strings_cut_them(engine: LlamaCppChatModel) -> None:
    # A reused KV-cache prefix evaluates the prompt in other batch shapes, which can flip a near tie
    # in greedy decoding; from a cold cache the same prompt gives the same answer.
    question = "Name three colours of the rainbow."
    engine.llama.reset()
    first = "".join(ask(engine, question))
    engine.llama.reset()
    assert first == "".join(ask(engine, question))
    words = [w for w in first.split() if len(w) > 3]
    assert len(words) >= 2, first
    cut_at = words[1]
    engine.llama.reset()
    stopped = "".join(
        ask(engine, question, GenerationParams(temperature=0.0, max_tokens=40, stop=(cut_at,)))
    )
    assert cut_at not in stopped
    assert stopped == first[: first.index(cut_at)]


def test_long_conversation_is_trimmed_not_crashed(bundled_path: Path) -> None:
    model = LlamaCppChatModel(bundled_path, context_size=512)
    try:
        history: list[Message] = [{"role": "system", "content": "You are terse."}]
        for i in range(40):
            history.append({"role": "user", "content": f"Fact {i}: " + "the sky is blue. " * 10})
            history.append({"role": "assistant", "content": f"Noted fact {i}."})
        history.append({"role": "user", "content": "Say OK."})
        params = GenerationParams(temperature=0.0, max_tokens=32)
        assert model.prompt_tokens(history) > model.context_length
        answer = "".join(model.stream_chat(history, params))
        assert answer.strip()
        stats = model.last_stats
        assert stats.trimmed_messages > 0
        assert stats.prompt_tokens <= model.answer_budget(params)
    finally:
        model.close()


def test_a_megabyte_message_is_refused_before_it_is_tokenized(engine: LlamaCppChatModel) -> None:
    huge: list[Message] = [{"role": "user", "content": "x" * 1_000_000}]
    with pytest.raises(PromptTooLongError, match="1,000,000 characters"):
        list(engine.stream_chat(huge, GREEDY))


def test_an_answer_nobody_reads_does_not_hold_the_model(bundled_path: Path) -> None:
    model = LlamaCppChatModel(bundled_path, context_size=1024, wait_seconds=0.05)
    story: list[Message] = [{"role": "user", "content": "Write a long story about a dog."}]
    long = GenerationParams(temperature=0.0, max_tokens=400, seed=1)
    hi: list[Message] = [{"role": "user", "content": "Hi"}]
    try:
        stats = GenerationStats()
        paused = model.stream_chat(story, long, stats)
        assert next(paused)  # the reader stops here, as a client that went away does
        with pytest.raises(ModelBusyError, match="still answering another request"):
            list(model.stream_chat(hi, GREEDY))
        stats.cancel.set()  # what the API does when the client goes
        model.wait_seconds = 30
        assert "".join(model.stream_chat(hi, GREEDY)).strip(), "the model is free again"
        assert stats.completion_tokens < 400, "the abandoned answer stopped early"

        forgotten = model.stream_chat(story, long)
        assert next(forgotten)
        del forgotten  # collected unread: its end frees the model too
        assert "".join(model.stream_chat(hi, GREEDY)).strip()
    finally:
        model.close()


def test_prompt_longer_than_the_context_is_a_clear_error(bundled_path: Path) -> None:
    model = LlamaCppChatModel(bundled_path, context_size=256)
    try:
        huge = "word " * 600  # 600 tokens, short of the characters refused unread
        with pytest.raises(PromptTooLongError, match=r"needs \d+ tokens but only \d+ fit"):
            list(model.stream_chat([{"role": "user", "content": huge}], GREEDY))
        # The model is still usable afterwards.
        assert "".join(model.stream_chat([{"role": "user", "content": "Hi"}], GREEDY)).strip()
    finally:
        model.close()


def test_fit_to_context_keeps_system_and_starts_with_a_user_turn() -> None:
    def count(msgs: list[Message]) -> int:
        return sum(len(m["content"]) for m in msgs)

    msgs: list[Message] = [{"role": "system", "content": "s" * 10}]
    for i in range(5):
        msgs += [
            {"role": "user", "content": f"u{i}" * 10},
            {"role": "assistant", "content": f"a{i}" * 10},
        ]
    msgs.append({"role": "user", "content": "last"})
    kept = fit_to_context(msgs, count, budget=100)
    assert kept[0]["role"] == "system"
    assert kept[1]["role"] == "user"
    assert kept[-1]["content"] == "last"
    assert count(kept) <= 100
    assert len(kept) < len(msgs)
    # The most recent turns are the ones kept, and as many as fit.
    assert kept[1:] == msgs[-len(kept) + 1 :]
    assert count([msgs[0], *msgs[-len(kept) - 1 :]]) > 100
    with pytest.raises(PromptTooLongError):
        fit_to_context(msgs, count, budget=5)


def test_model_without_chat_template_falls_back_with_a_warning(no_template_model: Path) -> None:
    model = LlamaCppChatModel(no_template_model, context_size=512)
    try:
        assert model.template_warning == FALLBACK_TEMPLATE_WARNING
        assert "".join(ask(model, "Hello")).strip()
    finally:
        model.close()


def test_switching_models_frees_the_old_one(tmp_path: Path, no_template_model: Path) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / no_template_model.name).symlink_to(no_template_model)
    manager = ModelManager(Settings(models_dir=models_dir, context_size=512))
    try:
        first = manager.get("bundled")
        assert manager.get("bundled") is first, "the same model is not loaded twice"
        second = manager.get(no_template_model.name)
        assert second is not first
        assert first._llama is None, "the previous model's memory is released on switch"
        assert (
            "threads" in manager.describe_loaded() and "backend: CPU" in manager.describe_loaded()
        )
        # New load options (context size) reload the model.
        third = manager.get(no_template_model.name, LoadOptions(256, 1, 0))
        assert third is not second and third.context_length == 256 and third.n_threads == 1
    finally:
        manager.close()
    assert manager.loaded is None
