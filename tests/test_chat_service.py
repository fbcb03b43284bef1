"""The chat service: its assembly of a conversation on its own (no model): the system prompt and the
history every face sends the same way; then regenerate, edit and the stopped mark on the bundled
model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from localllm.chat.conversations import ConversationError
from localllm.chat.service import (
    REGENERATE_TEMPERATURE,
    ChatMessage,
    ChatRequest,
    Reply,
    answer_details,
    plain_messages,
    regeneration_params,
    turns_from,
)
from localllm.config import Settings
from localllm.llm.base import GenerationParams
from localllm.rag.answer import GroundedAnswer
from localllm.rag.prompt import Source
from localllm.services import Services

SOURCE = Source(n=1, file="faq.pdf", pages=[3], section=None, text="Hold it.", score=0.9)


def test_the_default_system_prompt_comes_first_when_none_is_given() -> None:
    messages = plain_messages([ChatMessage("user", "Hi")], None, "Be brief.")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]


def test_a_given_system_message_wins_over_the_default_and_a_chosen_one_over_both() -> None:
    given = [ChatMessage("system", "Speak French."), ChatMessage("user", "Hi")]
    assert plain_messages(given, None, "Be brief.")[0]["content"] == "Speak French."
    chosen = plain_messages(given, "Talk like a pirate.", "Be brief.")
    assert [m["content"] for m in chosen] == ["Talk like a pirate.", "Hi"]
    assert plain_messages(given, "", "Be brief.") == [{"role": "user", "content": "Hi"}]


def test_history_pairs_questions_with_answers_and_their_sources() -> None:
    history = [
        ChatMessage("system", "ignored"),
        ChatMessage("user", "How do I hold a package?"),
        ChatMessage("assistant", "With apt-mark hold [1].", (SOURCE,)),
        ChatMessage("user", "unanswered"),
        ChatMessage("user", "And release it?"),
        ChatMessage("assistant", "apt-mark unhold."),
    ]
    turns = turns_from(history)
    assert [(t.question, t.answer) for t in turns] == [
        ("How do I hold a package?", "With apt-mark hold [1]."),
        ("And release it?", "apt-mark unhold."),
    ]
    assert turns[0].sources == [SOURCE] and turns[1].sources == []


def test_a_grounded_answer_is_saved_with_what_its_check_found() -> None:
    hold = Source(
        n=1,
        file="faq.pdf",
        pages=[40],
        section=None,
        text="Hold a package with apt-mark hold package_name.",
        score=0.9,
    )
    grounded = GroundedAnswer("How do I hold a package?", "hold package", [hold], [], False)
    written = "Hold a package with apt-mark hold. Penguins founded the project on the Moon."
    grounded.check(written)
    details = answer_details(grounded)
    assert details == {
        "outcome": grounded.outcome,
        "model_answer": written,
        "attribution": grounded.attribution.to_list(),
    }
    claims = details["attribution"]
    assert isinstance(claims, list) and [c["source"] for c in claims] == [1, None]
    assert claims[0]["span"] == [0, len(hold.text)]


# regenerate, edit and the stopped mark, on the bundled model (plain chat: no documents needed)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("chat_service")
    opened = Services(
        Settings(
            models_dir=root / "models",
            docs_store=root / "docs_store",
            runs_dir=root / "runs",
            conversations_path=root / "conversations.sqlite3",
            context_size=2048,
        )
    )
    yield opened
    opened.close()


def plain(max_tokens: int = 24, temperature: float = 0.0) -> ChatRequest:
    params = GenerationParams(temperature=temperature, max_tokens=max_tokens)
    return ChatRequest(params=params, system_prompt="You are a helpful assistant.")


def last(turn: Iterator[tuple[Reply, str]]) -> Reply:
    replies = [reply for reply, _piece in turn]
    assert replies
    return replies[-1]


def test_regenerating_at_temperature_0_samples_with_a_fresh_seed() -> None:
    greedy = GenerationParams(temperature=0.0, seed=None)
    assert regeneration_params(greedy, 7) == replace(
        greedy, temperature=REGENERATE_TEMPERATURE, seed=7
    )
    warm = GenerationParams(temperature=1.2, seed=3)
    assert regeneration_params(warm, 8) == replace(warm, seed=8), "the user's temperature stays"


def test_a_regenerated_answer_replaces_the_last_and_the_old_one_is_kept(
    services: Services,
) -> None:
    store = services.conversations
    question = "Write one sentence about a cat."
    first = last(services.chat.reply(question, plain(), conversation_id=None))
    conversation = first.conversation_id
    assert first.message_id is not None and first.text
    again = last(services.chat.regenerate(plain(), conversation_id=conversation))
    assert again.replaced_id == first.message_id and again.question_id == first.question_id
    assert again.text and again.message_id not in (None, first.message_id)
    shown = store.messages(conversation)
    assert [(m.role, m.content) for m in shown] == [("user", question), ("assistant", again.text)]
    (pair,) = [r for r in store.regenerations() if r.conversation_id == conversation]
    assert (pair.question, pair.replaced, pair.replacement, pair.kept) == (
        question,
        first.text,
        again.text,
        True,
    )
    # At temperature 0 the first answer is the greedy one; the regenerated one was sampled.
    greedy = last(services.chat.reply(question, plain(), conversation_id=None))
    assert greedy.text == first.text
    with pytest.raises(ConversationError, match="no answer to regenerate"):
        list(services.chat.regenerate(plain(), conversation_id=store.create()))


def test_an_edited_question_is_answered_and_the_old_turn_kept(services: Services) -> None:
    store = services.conversations
    first = last(services.chat.reply("Say yes.", plain(8), conversation_id=None))
    conversation = first.conversation_id
    edited = last(services.chat.edit("Say no.", plain(8), conversation_id=conversation))
    assert edited.conversation_id == conversation and edited.text
    shown = store.messages(conversation)
    assert [(m.role, m.content) for m in shown] == [("user", "Say no."), ("assistant", edited.text)]
    assert shown[0].id == edited.question_id
    old = store.messages(conversation, superseded=True)[:2]
    assert [(m.content, m.superseded_by) for m in old] == [
        ("Say yes.", edited.question_id),
        (first.text, edited.question_id),
    ]
    assert store.get(conversation).title == "Say no."
    assert store.regenerations() == [] or all(
        r.conversation_id != conversation for r in store.regenerations()
    )


def test_an_answer_cut_by_the_token_limit_or_stopped_is_saved_with_its_mark(
    services: Services,
) -> None:
    store = services.conversations
    long = "Count from one to one hundred in words."
    cut = last(services.chat.reply(long, plain(4), conversation_id=None))
    assert cut.cut == "length" and store.message(cut.message_id or 0).details == {"cut": "length"}

    # Stop: the reply cancelled after its first words ends at the next token, saved as stopped.
    turn = services.chat.reply(long, plain(200), conversation_id=None)
    pieces = 0
    for reply, piece in turn:
        pieces += bool(piece)
        if pieces == 3:
            reply.cancel()
    assert reply.cut == "stopped" and reply.message_id is not None
    saved = store.message(reply.message_id)
    assert saved.details == {"cut": "stopped"} and saved.content == reply.text
    assert services.models.get(None).count_tokens(saved.content) < 20, "ended soon after Stop"

    # A face that drops the stream (a closed page, the API's client gone) also saves it stopped.
    turn = services.chat.reply(long, plain(200), conversation_id=None)
    dropped = next(reply for reply, piece in turn if piece)
    turn.close()
    assert dropped.cut == "stopped" and dropped.message_id is not None
    assert store.message(dropped.message_id).details == {"cut": "stopped"}

    # Stopped before its first token (the Stop of an answer that waited for another's): saved
    # empty and marked, so the conversation says what happened to it.
    turn = services.chat.reply(long, plain(200), conversation_id=None)
    for reply, _piece in turn:
        reply.cancel()
    assert reply.text == "" and reply.cut == "stopped" and reply.message_id is not None
    assert store.message(reply.message_id).details == {"cut": "stopped"}
    assert [m.role for m in store.messages(reply.conversation_id)] == ["user", "assistant"]

    whole = last(services.chat.reply("Say yes.", plain(64), conversation_id=None))
    assert whole.cut is None and store.message(whole.message_id or 0).details == {}
