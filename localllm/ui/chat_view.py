"""What the Chat tab shows: choices for its pickers, source labels, saved messages as displayed."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

import gradio as gr

from localllm.chat.conversations import ConversationError, StoredMessage
from localllm.chat.sources import pages_text
from localllm.errors import LocalLLMError
from localllm.format import human_count, human_size
from localllm.index.lexical import tokenize
from localllm.llm.catalog import chat_models, resolve
from localllm.llm.download import SUGGESTED
from localllm.llm.labels import short_model_name
from localllm.rag.answer import is_decline
from localllm.rag.attribute import MIN_WORDS, marks_of, split_sentences, without_marks
from localllm.rag.prompt import Source
from localllm.services import Services
from localllm.ui.citations import link_citations

NO_DOCUMENTS = "No documents (plain chat)"


def model_choices(services: Services) -> list[tuple[str, str]]:
    """Each chat model by a name short enough to read whole (the status line gives the file)."""
    return [(short_model_name(m.name), m.name) for m in chat_models(services.settings)]


def default_model_name(services: Services) -> str | None:
    try:
        return resolve(services.settings, None).name
    except LocalLLMError:
        choices = model_choices(services)
        return choices[0][1] if choices else None


SMALL_MODEL = 1_000_000_000  # parameters: below this, answers are often wrong; say so


def model_note(services: Services, name: str | None) -> str:
    """For a small model: what it is, and how to get better answers (empty for a bigger one)."""
    try:
        info = resolve(services.settings, name)
    except LocalLLMError:
        return ""
    if info.kind == "adapter" or not info.parameters or info.parameters >= SMALL_MODEL:
        return ""
    first = SUGGESTED[0]
    return (
        f"**A small model** ({human_count(info.parameters)} parameters, "
        f"{human_size(info.size_bytes)}): fast and offline, but often wrong, or in another "
        f"language. Bigger ones: the **Models** tab (e.g. {first.label}, {first.size}), or a "
        "`.gguf` file copied into the models folder."
    )


def collection_choices(services: Services) -> list[tuple[str, str]]:
    names = [c.name for c in services.store.collections()]
    return [(NO_DOCUMENTS, ""), *((n, n) for n in names)]


def default_collection(services: Services) -> str:
    """The collection a new chat starts with: 'default' when it has documents, else none."""
    names = {d.collection for d in services.store.documents()}
    if "default" in names:
        return "default"
    return sorted(names)[0] if names else ""


def document_choices(services: Services, collection: str | None) -> list[str]:
    if not collection:
        return []
    return sorted({d.name for d in services.store.documents(collection)})


def when(stamp: float, now: float | None = None) -> str:
    """A time as a list shows it: the hour today, else the date."""
    then, today = time.localtime(stamp), time.localtime(now)
    return time.strftime("%H:%M" if then[:3] == today[:3] else "%Y-%m-%d", then)


def conversation_choices(services: Services, query: str = "") -> list[tuple[str, str]]:
    """The saved conversations holding `query` (all for none), last changed first, each with
    when that was."""
    store = services.conversations
    found = store.search(query) if query.strip() else store.conversations()
    return [(f"{c.title or '(untitled)'} · {when(c.updated)}", c.id) for c in found]


def searched_conversations(services: Services, query: str, open_id: str) -> Any:
    """The saved list narrowed to what `query` finds; the open chat chosen if it is listed."""
    choices = conversation_choices(services, query)
    listed = open_id in {value for _label, value in choices}
    return gr.update(choices=choices, value=open_id if listed else None)


def conversation_to_delete(services: Services, conversation_id: str) -> str | None:
    """How the delete button names the open chat once armed; None (and a note) if it is not saved."""
    if not conversation_id:
        gr.Info("This chat is not saved yet: there is nothing to delete.")
        return None
    try:
        return f"“{services.conversations.get(conversation_id).title or '(untitled)'}”"
    except ConversationError as e:
        raise gr.Error(str(e)) from e


def source_label(source: Source) -> str:
    pages = f" · {pages_text(source)}" if source.pages else ""
    section = f" · {source.section}" if source.section else ""
    cited = " ✓" if source.cited else ""
    return f"[{source.n}]{cited} {source.file}{pages}{section}"


def source_passage(source: Source, spans: Sequence[tuple[int, int]] | None = None) -> str:
    """A source as the Chat tab shows it: its label, what in it supports the answer (or, for a
    citation clicked, the `spans` that support its sentence), the passage."""

    def quote(text: str) -> str:
        return "\n".join(f"> {line}" for line in text.splitlines() if line.strip())

    parts = [f"**{source_label(source)}**"]
    shown = source.spans if spans is None else spans
    if shown:
        what = "the answer" if spans is None else "the sentence you clicked"
        supports = "\n>\n".join(quote(source.text[a:b]) for a, b in shown)
        parts += [f"Supports {what} (highlighted on the page):", supports, "The whole passage:"]
    parts.append(quote(source.text))
    return "\n\n".join(parts)


UNSUPPORTED = "⚠"  # before a sentence no source supports


def mark_unsupported(text: str) -> str:
    """A grounded answer with each claim that cites no source marked: attribution gave every
    supported sentence its [n], so a claim without one is what the documents did not support."""
    if is_decline(text) or text.startswith("A quote from your documents"):
        return text
    out, at = [], 0
    for start, end in split_sentences(text):
        sentence = text[start:end]
        out.append(text[at:start])
        claim = len(tokenize([without_marks(sentence)])[0]) >= MIN_WORDS
        out.append(f"{UNSUPPORTED} _{sentence}_" if claim and not marks_of(sentence) else sentence)
        at = end
    out.append(text[at:])
    return "".join(out)


def shown_answer(
    text: str,
    sources: list[Source],
    details: dict[str, Any] | None = None,
    message_id: int | None = None,
) -> str:
    """The answer as displayed: the text (unsupported claims marked; with the saved answer's id,
    each citation a link to the passage that supports its sentence), then its sources, then the
    model's own words folded when the documents did not support them (`details`, as saved)."""
    details = details or {}
    shown = text
    if sources:
        names = "<br>".join(source_label(s) for s in sources)  # one line each
        shown = mark_unsupported(text)
        legend = f"<br>{UNSUPPORTED} not found in them" if UNSUPPORTED in shown else ""
        if message_id is not None:
            shown = link_citations(shown, message_id, sources, details)
        shown = f"{shown}\n\n<sub>Sources:<br>{names}{legend}</sub>"
    model_text = str(details.get("model_answer") or "")
    if details.get("outcome") in ("quoted", "unsupported") and model_text and model_text != text:
        shown = with_unsupported(shown, model_text)
    cut = CUT_MARKS.get(str(details.get("cut")))
    return f"{shown}\n\n<sub>{cut}</sub>" if cut else shown


# How an answer cut short (Reply.cut, saved in its details) is marked.
CUT_MARKS = {
    "stopped": "⏹ Stopped: you stopped this answer",
    "length": "… Cut at the token limit (Parameters: Max new tokens)",
}


def with_unsupported(shown: str, model_text: str) -> str:
    """A shown answer, with the model's own words (which the documents did not support) folded."""
    hidden = html.escape(model_text)
    return f"{shown}\n\n<details><summary>Show the unsupported answer</summary>{hidden}</details>"


FEEDBACK = {1: "Like", -1: "Dislike"}  # a saved rating as the Chatbot's thumbs show it


def feedback_values(messages: list[StoredMessage]) -> list[str | None]:
    """The thumbs of each answer shown, in order: the Chatbot counts a run of consecutive answers
    as one bubble, rated by its last rated answer."""
    values: list[str | None] = []
    previous = ""
    for m in messages:
        if m.role == "assistant":
            rating = FEEDBACK.get(m.rating or 0)
            if previous == "assistant":
                values[-1] = rating or values[-1]
            else:
                values.append(rating)
        previous = m.role
    return values


def display_messages(
    services: Services, conversation_id: str
) -> tuple[list[dict[str, str]], list[int], list[str | None]]:
    """The saved conversation as the Chatbot shows it (with its thumbs), and each message's id."""
    shown: list[dict[str, str]] = []
    ids: list[int] = []
    messages = services.conversations.messages(conversation_id)
    for m in messages:
        sources = [Source.from_dict(s) for s in m.sources]
        content = (
            shown_answer(m.content, sources, m.details, m.id)
            if m.role == "assistant"
            else m.content
        )
        shown.append({"role": m.role, "content": content})
        ids.append(m.id)
    return shown, ids, feedback_values(messages)


def page_state(services: Services) -> tuple[Any, str, Any]:
    """What a page load refreshes: the saved conversations, the model line, the collections."""
    return (
        gr.update(choices=conversation_choices(services), value=None),
        services.models.describe_loaded(),
        gr.update(choices=collection_choices(services)),
    )


def source_radio(sources: list[Source], chosen: int | None = None) -> Any:
    return gr.update(
        choices=[(source_label(s), str(s.n)) for s in sources],
        value=None if chosen is None else str(chosen),
        visible=bool(sources),
    )
