"""What the tabs show, from real saved conversations and metrics: thumbs, loss series, previews."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import gradio as gr
import pytest

from localllm.chat.conversations import ConversationStore
from localllm.chat.sources import highlighted
from localllm.config import Settings
from localllm.finetune.data import liked_answers
from localllm.llm.download import SUGGESTED
from localllm.llm.labels import LABEL_LENGTH, short_model_name
from localllm.rag.prompt import Source
from localllm.services import Services
from localllm.ui.chat_view import (
    UNSUPPORTED,
    conversation_choices,
    display_messages,
    feedback_values,
    model_choices,
    model_note,
    shown_answer,
    source_label,
    when,
)
from localllm.ui.citations import Citation
from localllm.ui.finetune_view import conversation_labels, loss_frame, preview_rows
from tests.corpus import corpus_file


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ConversationStore]:
    with ConversationStore(tmp_path / "conversations.sqlite3") as opened:
        yield opened


def test_saved_ratings_become_the_thumbs_of_each_answer_bubble(store: ConversationStore) -> None:
    chat = store.create()
    answers = []
    for i in range(3):
        store.add_message(chat, "user", f"question {i}")
        answers.append(store.add_message(chat, "assistant", f"answer {i}"))
    liked, _plain, disliked = answers
    store.rate(liked, 1)
    store.rate(disliked, -1)
    assert feedback_values(store.messages(chat)) == ["Like", None, "Dislike"]
    # Two answers in a row are one bubble in the Chatbot: it takes the later rating.
    store.rate(store.add_message(chat, "assistant", "a3"), 1)
    assert feedback_values(store.messages(chat)) == ["Like", None, "Like"]


def test_every_loss_frame_names_both_series_so_the_first_run_has_colours() -> None:
    plot = gr.LinePlot(x="step", y="loss", color="series")
    for metrics in ([], [{"step": 1, "loss": 2.0}], [{"step": 2, "loss": 1.5, "eval_loss": 1.7}]):
        data = plot.postprocess(loss_frame(metrics))
        assert data is not None
        assert [row[2] for row in data.data[:2]] == ["training", "validation"]
        assert data.datatypes == {
            "step": "quantitative",
            "loss": "quantitative",
            "series": "nominal",
        }
    drawn = plot.postprocess(loss_frame([{"step": 2, "loss": 1.5, "eval_loss": 1.7}]))
    assert drawn is not None and drawn.data[2:] == [[2, 1.5, "training"], [2, 1.7, "validation"]]


def test_a_liked_answer_previews_by_its_conversation_not_its_ids(
    store: ConversationStore,
) -> None:
    chat = store.create()
    store.add_message(chat, "user", "Where is Google Earth?")
    store.rate(store.add_message(chat, "assistant", "In contrib."), 1)
    examples = liked_answers(store)
    rows = preview_rows(examples, conversation_labels(store, examples))
    where, _prompt, answer, source = rows[0]
    assert answer == "In contrib." and where == "a liked answer"
    assert re.fullmatch(r"“Where is Google Earth\?” · \d{4}-\d\d-\d\d \d\d:\d\d", source), source
    assert chat not in " ".join(rows[0])
    store.delete(chat)
    assert preview_rows(examples, conversation_labels(store, examples))[0][3] == (
        "a conversation since deleted"
    )


def test_a_small_model_says_what_it_is_and_where_bigger_ones_are(tmp_path: Path) -> None:
    services = Services(Settings(models_dir=tmp_path / "models", docs_store=tmp_path / "docs"))
    note = model_note(services, None)  # the bundled SmolLM2-135M
    assert "134.5M parameters" in note and "**Models** tab" in note
    assert SUGGESTED[0].label in note and SUGGESTED[0].size in note
    assert model_note(services, "missing.gguf") == ""
    assert all(s.file.endswith(".gguf") and s.repo.count("/") == 1 for s in SUGGESTED)


def test_saved_conversations_are_listed_with_when_they_last_changed(tmp_path: Path) -> None:
    services = Services(
        Settings(conversations_path=tmp_path / "c.sqlite3", docs_store=tmp_path / "docs")
    )
    chat = services.conversations.create()
    services.conversations.add_message(chat, "user", "Where does the heron nest?")
    [(label, value)] = conversation_choices(services)
    assert value == chat and re.fullmatch(r"Where does the heron nest\? · \d\d:\d\d", label)
    assert when(0.0, now=86_400.0 * 365) == time.strftime("%Y-%m-%d", time.localtime(0.0))


CONFFILE = Source(  # a chunk of page 37 of the Debian FAQ: a title, then a paragraph of four lines
    n=1,
    file="debian-faq.en.pdf",
    pages=[37],
    section="7.5 What is a Debian conffile?",
    text="7.5 What is a Debian conffile?\nConffiles is a list of configuration files (usually "
    "placed in /etc) that the package management system\nwill not overwrite when the package is "
    "upgraded. This ensures that local values for the contents of these\nfiles will be "
    "preserved, and is a critical feature enabling the in-place upgrade of packages on a "
    "running\nsystem.",
    score=0.9,
    doc_id="faq",
    boxes=[
        (37, (85.57, 306.95, 299.27, 317.94)),
        (37, (85.14, 334.61, 538.41, 380.2)),
    ],
    cited=True,
)
LIST = (31, 133)  # "Conffiles is a list ... management system": the paragraph's first line
ENSURES = (CONFFILE.text.index("This ensures"), len(CONFFILE.text))  # its last three lines


def test_each_span_is_highlighted_by_the_lines_it_is_on() -> None:
    faq = corpus_file("debian-faq.en.pdf")
    title, paragraph = (box for _, box in CONFFILE.boxes)
    page, [line] = highlighted(faq, CONFFILE, [LIST])
    assert page == 37 and line[3] - line[1] < 12, "one line, not the paragraph"
    assert paragraph[1] - 1 <= line[1] < line[3] <= paragraph[1] + 12
    _, lines = highlighted(faq, CONFFILE, [ENSURES])
    assert len(lines) == 3 and all(paragraph[1] < b[1] < b[3] < paragraph[3] + 1 for b in lines)
    assert line not in lines
    _, both = highlighted(faq, CONFFILE, [(0, 30), LIST])
    assert both[1] == line and title[1] - 1 <= both[0][1] < both[0][3] <= title[3] + 1
    assert highlighted(faq, CONFFILE, []) == (37, [title, paragraph]), "no spans: the passage"
    scrubbed = replace(CONFFILE, text=CONFFILE.text.replace("Conffiles", "[X]"))
    assert highlighted(faq, scrubbed, [LIST]) == (37, [title, paragraph]), "not on the page"


CHECKED = {
    "outcome": "answered",
    "model_answer": "Conffiles is a list of configuration files. It ensures local values are "
    "kept. Penguins wrote it on the Moon.",
    "attribution": [
        {"sentence": "Conffiles is a list of configuration files.", "source": 1, "span": [31, 133]},
        {"sentence": "It ensures local values are kept.", "source": 1, "span": list(ENSURES)},
        {"sentence": "Penguins wrote it on the Moon.", "source": None, "span": None},
    ],
}
SHOWN = (
    "Conffiles is a list of configuration files [1]. It ensures local values are kept [1]. "
    "Penguins wrote it on the Moon."
)


def test_a_saved_answer_shows_a_link_per_sentence_its_marks_and_its_fold(tmp_path: Path) -> None:
    services = Services(
        Settings(conversations_path=tmp_path / "c.sqlite3", docs_store=tmp_path / "docs")
    )
    saved = services.conversations
    chat = saved.create(collection="faq")
    sources = [CONFFILE.to_dict()]
    saved.add_message(chat, "user", "What is a conffile?")
    answered = saved.add_message(chat, "assistant", SHOWN, sources, CHECKED)
    quote = 'A quote from your documents (debian-faq.en.pdf, p. 37): "Conffiles is a list" [1]'
    quoted = {"outcome": "quoted", "model_answer": "Penguins.", "attribution": []}
    quoted_id = saved.add_message(
        chat, "assistant", quote, [{**sources[0], "spans": [LIST]}], quoted
    )
    old = saved.add_message(chat, "assistant", "In /etc [1].", sources)  # saved before details
    shown, ids, _ = display_messages(services, chat)
    checked, quoting, unchecked = (m["content"] for m in shown[1:])
    first, second = (Citation(answered, 1, span).href for span in (LIST, ENSURES))
    assert f"files [[1]]({first}). It ensures local values are kept [[1]]({second})" in checked
    assert f"{UNSUPPORTED} _Penguins wrote it on the Moon._" in checked
    assert "Show the unsupported answer" not in checked, "the model's own words are shown"
    assert quoting.startswith(f"{quote[:-4]} [[1]]({Citation(quoted_id, 1, LIST).href})")
    assert "<details><summary>Show the unsupported answer</summary>Penguins.</details>" in quoting
    assert f"In /etc [[1]]({Citation(old, 1, None).href})." in unchecked, "the whole source"
    assert "<details>" not in unchecked
    assert ids == [m.id for m in saved.messages(chat)]
    services.close()


def test_a_citation_link_reads_back_as_what_it_cites() -> None:
    for cited in (Citation(12, 3, (40, 97)), Citation(5, 1, None)):
        assert Citation.parse(cited.href.removeprefix("#cite-")) == cited
    assert Citation(12, 3, (40, 97)).href == "#cite-12-3-40-97"
    for bad in ("", "12", "12-x", "12-3-40", "../etc", "12-3-40-97-1"):
        assert Citation.parse(bad) is None, bad


def test_the_sources_under_an_answer_are_one_a_line_with_their_printed_pages() -> None:
    printed = replace(CONFFILE, printed={37: "29"})
    other = replace(CONFFILE, n=2, pages=[38, 39], printed={}, cited=False, section="7.6 Next")
    shown = shown_answer("Conffiles are kept [1].", [printed, other])
    listed = shown.split("<sub>", 1)[1]
    assert listed.startswith("Sources:<br>[1] ✓ debian-faq.en.pdf · p. 37 (printed 29) · 7.5")
    assert "<br>[2] debian-faq.en.pdf · pp. 38-39 · 7.6 Next</sub>" in listed, listed
    assert source_label(printed) == (
        "[1] ✓ debian-faq.en.pdf · p. 37 (printed 29) · 7.5 What is a Debian conffile?"
    )


def test_model_names_are_shortened_to_read_whole_by_what_tells_them_apart() -> None:
    assert short_model_name("SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct.Q4_1"
    base = "SmolLM2-135M-Instruct.Q4_1"
    assert short_model_name(f"{base}--20261201-094012-lora.lora.gguf") == (
        "20261201-094012.lora.gguf"  # the run's id, not the base every run shares
    )
    assert short_model_name(f"{base}--faq.lora.gguf") == "faq.lora.gguf"
    assert short_model_name("tiny--faq.Q8_0.gguf") == "faq.Q8_0 · tiny", "merged, base fits"
    assert short_model_name("tiny.lora.gguf") == "tiny.lora.gguf", "an adapter says it is one"
    long = short_model_name("Meta-Llama-3.1-8B-Instruct-abliterated-v2.Q4_K_M.gguf")
    assert len(long) == LABEL_LENGTH and long.startswith("Meta-Llama-3.1-8B"), long
    assert long.endswith("v2.Q4_K_M") and "…" in long, long


def test_the_chat_tabs_model_list_shows_short_names_for_full_file_names(tmp_path: Path) -> None:
    services = Services(Settings(models_dir=tmp_path / "models", docs_store=tmp_path / "docs"))
    [(label, value)] = model_choices(services)  # the bundled model alone
    assert value == "SmolLM2-135M-Instruct.Q4_1.gguf" and label == "SmolLM2-135M-Instruct.Q4_1"
    assert len(label) <= LABEL_LENGTH
