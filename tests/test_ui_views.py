"""What the tabs show, from real saved conversations and metrics: thumbs, loss series, previews."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest

from localllm.chat.conversations import ConversationStore
from localllm.config import Settings
from localllm.finetune.data import liked_answers
from localllm.llm.download import SUGGESTED
from localllm.services import Services
from localllm.ui.chat_view import conversation_choices, feedback_values, model_note, when
from localllm.ui.finetune_view import conversation_labels, loss_frame, preview_rows


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
