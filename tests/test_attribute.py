"""Attribution on its own: sentences, citation marks, support by words (no embedder here; the
end-to-end tests with the real embedder and the FAQ are in test_rag.py)."""

from __future__ import annotations

from localllm.rag.attribute import (
    attribute,
    best_quote,
    cite_sentences,
    echoed,
    marks_of,
    split_sentences,
    without_marks,
)
from localllm.rag.prompt import Source

HOLD = Source(
    n=1,
    file="faq.pdf",
    pages=[40],
    section="7.13 How do I hold a package?",
    text="There are three ways of holding back packages.\nWith dpkg, run dpkg --set-selections.\n"
    "With apt-mark, run apt-mark hold followed by the package name.",
    score=0.8,
    boxes=[(40, (1.0, 2.0, 3.0, 4.0)), (40, (1.0, 5.0, 3.0, 6.0)), (40, (1.0, 7.0, 3.0, 8.0))],
)
OTHER = Source(
    n=2,
    file="faq.pdf",
    pages=[12],
    section="3.1 Releases",
    text="Debian 12 was released in June 2023. It is code named bookworm.",
    score=0.5,
)


def test_sentences_end_after_their_citation_marks() -> None:
    text = "Use apt-mark hold [1]. It keeps the version [1, 2].\nAlso dpkg works!"
    parts = [text[a:b] for a, b in split_sentences(text)]
    assert parts == ["Use apt-mark hold [1].", "It keeps the version [1, 2].", "Also dpkg works!"]
    assert marks_of(parts[1]) == [1, 2] and without_marks(parts[0]) == "Use apt-mark hold."


def test_a_sentence_the_source_states_is_attributed_to_it_and_its_span() -> None:
    answer = "Run apt-mark hold followed by the package name [2]. Debian 12 came out in 2023."
    found = attribute(answer, [HOLD, OTHER])
    first, second = found.claims
    assert first.source == 1 and first.corrected, "the model's wrong [2] is corrected to [1]"
    assert "apt-mark hold" in HOLD.text[first.span[0] : first.span[1]]  # type: ignore[index]
    assert second.source == 2 and not second.corrected
    assert cite_sentences(answer, found) == (
        "Run apt-mark hold followed by the package name [1]. Debian 12 came out in 2023 [2]."
    )
    assert found.spans()[1] == [first.span]


def test_a_made_up_sentence_and_a_wrong_number_are_unsupported() -> None:
    found = attribute(
        "Penguins founded the project on the Moon. Debian 12 was released in June 1999.",
        [HOLD, OTHER],
    )
    assert [s.supported for s in found.claims] == [False, False]
    assert not found.any_supported and found.supported_share == 0.0


def test_a_source_label_echoed_back_is_no_answer() -> None:
    question = "How do I put a package on hold?"
    label = "The answer to your question is: [1] faq.pdf, page 40 (7.13 How do I hold a package?)"
    assert echoed(label, [HOLD], question)
    assert echoed("How do I put a package on hold? [1]", [HOLD], question)
    assert not echoed("Run apt-mark hold followed by the package name [1].", [HOLD], question)


def test_the_passage_that_answers_is_quoted_with_its_citation_and_lines() -> None:
    quote = best_quote("How do I hold a package with apt-mark?", [OTHER, HOLD], None, 0.6)
    assert quote is not None
    source, span, text = quote
    assert source is HOLD and text.startswith("A quote from your documents (faq.pdf, p. 40)")
    assert "apt-mark hold" in text and text.endswith("[1]")
    HOLD.spans = [span]
    assert (40, (1.0, 7.0, 3.0, 8.0)) in HOLD.span_boxes()
    assert (40, (1.0, 2.0, 3.0, 4.0)) not in HOLD.span_boxes(), "only the lines that hold it"
    assert best_quote("What colour is the sky on Mars?", [OTHER, HOLD], None, 0.6) is None


def test_the_chat_marks_the_claims_no_source_supports() -> None:
    from localllm.ui.chat_view import UNSUPPORTED, mark_unsupported, shown_answer

    text = "Run apt-mark hold [1]. Penguins founded the project on the Moon. Sure!"
    marked = mark_unsupported(text)
    assert (
        marked
        == f"Run apt-mark hold [1]. {UNSUPPORTED} _Penguins founded the project on the Moon._ Sure!"
    )
    assert "not found in them" in shown_answer(text, [HOLD])
    refusal = "I can't find that in your documents."
    assert mark_unsupported(refusal) == refusal
    assert UNSUPPORTED not in shown_answer("Run apt-mark hold [1].", [HOLD])


FAQ_ENTRY = Source(
    n=1,
    file="faq.pdf",
    pages=[30],
    section="6 The Debian archives",
    text="THE DEBIAN ARCHIVES 6.3. WHAT ABOUT SID?\n6.3 What about sid?\n"
    "sid or unstable is the place where most of the packages are initially uploaded.\n"
    "It will never be released directly.\n6.4 What is the testing distribution?\n"
    "Testing is the distribution that becomes the next stable one.",
    score=0.8,
)


def test_a_question_heading_is_quoted_with_the_answer_under_it() -> None:
    quote = best_quote("What about sid?", [FAQ_ENTRY], None, 0.5)
    assert quote is not None
    _, (start, end), _ = quote
    quoted = FAQ_ENTRY.text[start:end]
    assert quoted.startswith("6.3 What about sid?"), "not the running header that repeats it"
    assert "initially uploaded" in quoted
    assert "testing" not in quoted.lower(), "the answer stops before the next question"
    alone = Source(**{**FAQ_ENTRY.__dict__, "text": "6.3 What about sid?\n6.4 What is testing?"})
    assert best_quote("What about sid?", [alone], None, 0.5) is None, "a heading answers nothing"


def test_what_an_answer_shows_follows_what_attribution_found() -> None:
    from localllm.rag.answer import decide

    strong, weak = (0.95, 2), (0.55, 2)
    kw = {"quote_threshold": 0.5, "lead_threshold": 0.9}
    assert decide(model_declined=False, supported={1}, echoed=False, quote=weak, **kw) == "answered"
    assert decide(model_declined=False, supported={2}, echoed=False, quote=strong, **kw) == (
        "answered"
    ), "the model answered from the passage that answers: its words are shown"
    assert decide(model_declined=False, supported={1}, echoed=False, quote=strong, **kw) == (
        "quoted"
    ), "a passage that answers the question word for word leads over another source"
    assert (
        decide(model_declined=True, supported=set(), echoed=False, quote=strong, **kw) == "quoted"
    )
    assert (
        decide(model_declined=True, supported=set(), echoed=False, quote=weak, **kw) == "declined"
    )
    assert decide(model_declined=False, supported={1}, echoed=True, quote=weak, **kw) == "quoted"
    assert decide(model_declined=False, supported=set(), echoed=False, quote=(0.4, 1), **kw) == (
        "unsupported"
    )
    never = {"quote_threshold": 0.5, "lead_threshold": 1.01}
    assert decide(model_declined=False, supported={1}, echoed=False, quote=(1.0, 2), **never) == (
        "answered"
    )
