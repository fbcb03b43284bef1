"""The chat service's assembly of a conversation, on its own (no model): the system prompt and the
history every face sends the same way."""

from __future__ import annotations

from localllm.chat.service import ChatMessage, answer_details, plain_messages, turns_from
from localllm.rag.answer import GroundedAnswer
from localllm.rag.prompt import Source

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
