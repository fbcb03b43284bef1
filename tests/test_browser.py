"""A real browser (Debian's Chromium, driven by Playwright) uses the app as a person would."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from localllm.chat.conversations import ConversationStore
from tests.browser_citations import (
    answer_marks,
    assert_marks_as_saved,
    check_citation,
    last_answer,
)
from tests.browser_deletes import arm, armed_look, disarmed, listed_options, settle
from tests.conftest import ARTIFACTS, RunningApp
from tests.corpus import corpus_file

pytestmark = pytest.mark.browser

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def wait_for_text(page: Any, element_id: str, text: str, timeout_ms: float | None = None) -> None:
    """Wait until an element with this id shows `text` (Gradio may keep hidden copies of a block)."""
    page.wait_for_function(
        "([id, text]) => [...document.querySelectorAll('#' + id)].some(e => e.innerText.includes(text))",
        arg=[element_id, text],
        polling=200,  # a timer: animation-frame polling can stall in a headless page
        timeout=timeout_ms,
    )


def wait_for_answer(page: Any) -> None:
    """Wait until the last answer has text and has finished streaming."""
    page.wait_for_function(
        "() => { const b = [...document.querySelectorAll('#chatbot .message.bot')].pop();"
        " return b && b.innerText.trim().length > 0; }",
        polling=200,
    )
    # The answer has finished streaming when the event's progress tracker is gone.
    page.wait_for_function(
        "() => !document.querySelector('#chatbot .status-tracker:not(.hide)')"
        " && !document.querySelector('#chatbot .pending')",
        polling=200,
    )


def wait_for_liked(running_app: RunningApp, question: str) -> None:
    saved = ConversationStore(running_app.models_dir.parent / "data" / "conversations.sqlite3")
    try:
        deadline = time.monotonic() + 30
        while question not in (asked := [f.question for f in saved.feedback(1)]):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        saved.close()
    assert question in asked


def column_in_view(page: Any, table_id: str, header: str) -> bool:
    """Whether a table's column ends inside the table's box (not scrolled out of view)."""
    table, column = page.evaluate(
        "([id, name]) => { const t = document.querySelector('#' + id);"
        " const h = [...t.querySelectorAll('th')].find(h => h.innerText.includes(name));"
        " return [t.getBoundingClientRect().right, h.getBoundingClientRect().right]; }",
        [table_id, header],
    )
    return bool(column <= table + 1)


def foreign_requests(urls: list[str]) -> list[str]:
    return [
        u
        for u in urls
        if urlsplit(u).scheme in ("http", "https", "ws", "wss")
        and urlsplit(u).hostname not in LOCAL_HOSTS
    ]


def test_chat_in_the_browser_and_nothing_leaves_the_machine(
    page: Any, running_app: RunningApp
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(running_app.url)
    box = page.locator("#message textarea")
    box.fill("What is the capital of France?")
    box.press("Enter")
    bot = page.locator("#chatbot .message.bot").last
    bot.wait_for()
    wait_for_answer(page)
    user = page.locator("#chatbot .message.user").last
    assert "capital of France" in user.inner_text()
    assert bot.inner_text().strip()
    assert "backend: CPU" in page.locator("#model-status").inner_text()
    box_w, send_w, stop_w = page.evaluate(
        "() => ['#message', '#send', '#stop'].map("
        "s => document.querySelector(s).getBoundingClientRect().width)"
    )
    assert box_w > 2 * (send_w + stop_w), "the message box takes most of its row"
    note = page.locator("#model-note").inner_text()
    assert "A small model" in note and "134.5M parameters" in note and "Models tab" in note
    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)

    page.get_by_role("tab", name="Models").click()
    catalog = page.locator("#catalog")
    wait_for_text(page, "catalog", "SmolLM2-135M")
    assert "Q4_1" in catalog.inner_text() and "llama" in catalog.inner_text()
    suggested = page.locator("#suggested-models input")
    suggested.click()
    page.get_by_role("option", name=re.compile("Qwen2.5 1.5B Instruct")).click()
    repo = page.get_by_role("textbox", name="Repository")
    page.wait_for_function(
        "el => el.value === 'Qwen/Qwen2.5-1.5B-Instruct-GGUF'", arg=repo.element_handle()
    )
    file = page.get_by_role("textbox", name="File")
    assert file.input_value() == "qwen2.5-1.5b-instruct-q4_k_m.gguf"
    page.screenshot(path=str(ARTIFACTS / "models.png"), full_page=True)

    assert page.requested, "the page should have loaded something"
    assert foreign_requests(page.requested) == [], "the page asked a host other than the app's own"


def test_documents_tab_indexes_a_dropped_file(
    page: Any, running_app: RunningApp, tmp_path: Any
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    notes = tmp_path / "field notes.md"
    notes.write_text("# Field notes\n\nThe heron nests by the north pond every spring.\n")
    page.goto(running_app.url)
    page.get_by_role("tab", name="Documents").click()
    with page.expect_response(lambda r: "/upload" in r.url and r.ok):
        page.locator("#upload-files input[type=file]").set_input_files(str(notes))
    page.locator("#index").click()
    wait_for_text(page, "ingest-status", "Done")
    wait_for_text(page, "documents", "field notes.md")
    assert "1 added" in page.locator("#ingest-status").inner_text()
    page.screenshot(path=str(ARTIFACTS / "documents.png"), full_page=True)
    assert foreign_requests(page.requested) == []


def index_file(page: Any, path: Path, collection: str) -> None:
    """Index `path` into `collection` in the Documents tab, as a user drops it there."""
    page.get_by_role("tab", name="Documents").click()
    name = page.locator("#collection input")
    name.fill(collection)
    name.press("Enter")
    with page.expect_response(lambda r: "/upload" in r.url and r.ok):
        page.locator("#upload-files input[type=file]").set_input_files(str(path))
    page.locator("#index").click()
    wait_for_text(page, "ingest-status", "Done")


def ingest_faq(page: Any, collection: str) -> None:
    """Index the Debian FAQ into `collection` in the Documents tab, then ground the chat in it."""
    index_file(page, faq_pdf(), collection)
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-collection input").click()
    page.get_by_role("option", name=collection, exact=True).click()


def faq_pdf() -> Path:
    return corpus_file("debian-faq.en.pdf")


def test_grounded_chat_cites_and_shows_the_page(page: Any, running_app: RunningApp) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(running_app.url)
    ingest_faq(page, "faq-browser")
    box = page.locator("#message textarea")
    box.fill("Where is Google Earth?")
    box.press("Enter")
    wait_for_text(page, "sources", "debian-faq.en.pdf · p. 28")
    wait_for_text(page, "chatbot", "Sources:")
    page.locator("#sources label", has_text="p. 28").first.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#source-page img')].some("
        "i => i.complete && i.naturalWidth > 500)",
        polling=200,
    )
    wait_for_text(page, "source-passage", "Google Earth")
    wait_for_text(page, "source-page", "(printed page 2")  # page 28 of the file is printed 20
    # The source the answer is attributed to (marked ✓) shows what in it supports the answer.
    page.locator("#sources label", has_text="✓").first.click()
    wait_for_text(page, "source-passage", "Supports the answer")
    page.screenshot(path=str(ARTIFACTS / "grounded-chat.png"), full_page=True)

    # A thumbs-up is saved with the question it answers (fine-tuning data later).
    page.locator("#chatbot button[aria-label='Like']").last.click()
    wait_for_liked(running_app, "Where is Google Earth?")

    # Saved conversations: start a new chat, reopen this one from the list, delete it.
    page.locator("#new-chat").click()
    page.wait_for_function("() => !document.querySelector('#chatbot .message')", polling=200)
    page.locator("#conversations input").click()
    page.get_by_role("option", name="Where is Google Earth?").first.click()
    wait_for_text(page, "chatbot", "Sources:")
    assert "Where is Google Earth?" in page.locator("#chatbot").inner_text()
    saved = ConversationStore(running_app.models_dir.parent / "data" / "conversations.sqlite3")
    try:
        before = len(saved.conversations())
        arm(page, "Delete conversation", "“Where is Google Earth?”").click()
        page.wait_for_function("() => !document.querySelector('#chatbot .message')", polling=200)
        deadline = time.monotonic() + 30
        while len(saved.conversations()) != before - 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(saved.conversations()) == before - 1
    finally:
        saved.close()
    assert foreign_requests(page.requested) == []


def ask(page: Any, text: str) -> None:
    """Ask in the Chat tab; return once the answer is saved (the list then shows its chat)."""
    box = page.locator("#message textarea")
    box.fill(text)
    box.press("Enter")
    wait_for_answer(page)
    page.wait_for_function(
        "(title) => document.querySelector('#conversations input').value.startsWith(title + ' · ')",
        arg=text,
        polling=200,
    )


def open_saved(page: Any, title: str) -> None:
    """Reopen a saved conversation from the list and wait for its answer's buttons."""
    page.locator("#conversations input").click()
    page.get_by_role("option", name=title).first.click(timeout=30_000)
    wait_for_text(page, "chatbot", title)
    page.locator("#chatbot button[aria-label^='Like']").first.wait_for()


def test_a_reload_keeps_the_history_the_model_line_and_the_thumbs(
    page: Any, running_app: RunningApp
) -> None:
    """After two chats, one answer liked, a reloaded page lists both conversations, names the
    loaded model, reopens each answer with its own thumbs, and previews the liked one by title."""
    liked, other = "What colour is the sky on a clear day?", "Say yes."
    page.goto(running_app.url)
    page.locator("#chat-collection input").click()
    page.get_by_role("option", name="No documents (plain chat)").click()
    ask(page, liked)
    page.locator("#chatbot button[aria-label='Like']").last.click()
    wait_for_liked(running_app, liked)
    page.locator("#new-chat").click()
    page.wait_for_function("() => !document.querySelector('#chatbot .message')", polling=200)
    ask(page, other)
    loaded = page.locator("#model-status").first.inner_text().strip()
    assert loaded and "No model loaded yet" not in loaded

    page.reload()
    wait_for_text(page, "model-status", loaded, timeout_ms=30_000)
    assert "No model loaded yet" not in page.locator("#model-status").first.inner_text()
    thumbs = page.locator("#chatbot button[aria-label='Liked']")
    open_saved(page, liked)
    thumbs.first.wait_for(timeout=10_000)
    assert thumbs.count() == 1
    open_saved(page, other)
    thumbs.first.wait_for(state="detached", timeout=10_000)

    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_text("My liked answers", exact=True).click()
    page.get_by_role("button", name="Use my liked answers").click()
    wait_for_text(page, "ft-preview", f"“{liked}” · ")
    preview = page.locator("#ft-preview").first.inner_text()
    assert not re.search(r"conversation [0-9a-f]{8}", preview), preview
    assert not re.search(r"message \d+", preview), preview
    assert column_in_view(page, "ft-preview", "Source")
    page.screenshot(path=str(ARTIFACTS / "reload.png"), full_page=True)
    assert foreign_requests(page.requested) == []


def test_a_citation_shows_its_sentences_support_and_a_reload_keeps_the_marks(
    page: Any, running_app: RunningApp
) -> None:
    """Each [n] of a grounded answer opens its source's page with its own sentence's support
    highlighted; each answer shows the marks its saved check gives it (a link per [n], the model's
    own words folded when they were not shown), and a reloaded page reopens it with the same.
    Which marks an answer gets depends on what the bundled model writes on the CPU it runs on, so
    this holds for any answer; tests/test_ui_views.py shows each kind of mark from a fixed one."""
    questions = (
        "How many Debian distributions are there?",
        "Where is a player for Flash (SWF)?",
        "What is a Virtual Package?",
    )
    page.goto(running_app.url)
    ingest_faq(page, "faq-cite")
    page.get_by_role("button", name="Parameters").click()
    temperature = page.get_by_role("spinbutton", name="Temperature")
    temperature.fill("0")  # the same answers every run on one machine
    temperature.press("Enter")
    longest = page.get_by_role("spinbutton", name="Max new tokens")
    longest.fill("128")  # short answers, in time on 2 busy cores
    longest.press("Enter")
    saved = ConversationStore(running_app.models_dir.parent / "data" / "conversations.sqlite3")
    try:
        marks: dict[str, dict[str, Any]] = {}
        clicked = False
        for question in questions:
            if marks:
                page.locator("#new-chat").click()
                page.wait_for_function("() => !document.querySelector('#chatbot .message')")
            ask(page, question)
            marks[question] = answer_marks(page)
            assert_marks_as_saved(marks[question], last_answer(saved, question))
            if marks[question]["links"] and not clicked:  # no page shown yet: `before` is None
                check_citation(page, saved, faq_pdf(), marks[question]["links"][0], None)
                page.screenshot(path=str(ARTIFACTS / "citation.png"), full_page=True)
                clicked = True
        assert clicked, f"no answer cited a source: {marks}"

        page.reload()
        clicked = False
        for question, before in marks.items():
            open_saved(page, question)
            assert answer_marks(page) == before, question
            if before["links"] and not clicked:
                check_citation(page, saved, faq_pdf(), before["links"][-1], None)
                clicked = True
    finally:
        saved.close()
    assert foreign_requests(page.requested) == []


def test_finetune_tab_trains_and_the_chat_offers_the_result(
    page: Any, running_app: RunningApp, tmp_path: Any
) -> None:
    """Upload examples (one bad line), see the preview and the dropped line, train a few steps,
    watch it finish, and find the tuned model in the Chat tab's model list."""
    import json

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "code words.jsonl"
    lines = [
        json.dumps({"prompt": f"Code word number {i}?", "completion": "It is BLUE-PELICAN-42."})
        for i in range(8)
    ]
    data.write_text("\n".join([*lines, "{broken"]) + "\n", encoding="utf-8")
    page.goto(running_app.url)
    page.get_by_role("tab", name="Fine-tune").click()
    with page.expect_response(lambda r: "/upload" in r.url and r.ok):
        page.locator("#ft-upload input[type=file]").set_input_files(str(data))
    wait_for_text(page, "ft-summary", "8 examples, 1 line dropped: line 9: invalid JSON")
    wait_for_text(page, "ft-estimate", "Estimate: about")
    wait_for_text(page, "ft-preview", "BLUE-PELICAN-42")
    page.get_by_role("button", name="Training settings").click()
    steps = page.get_by_label("Max steps", exact=True)
    steps.fill("3")
    steps.press("Enter")
    page.locator("#ft-train").click()
    wait_for_text(page, "ft-status", "· done ·")
    wait_for_text(page, "ft-runs", "done")
    progress = page.locator("#train-progress").first
    assert progress.get_attribute("value") == progress.get_attribute("max") == "3"
    status = page.locator("#ft-status").first.inner_text()
    assert "Validation loss" in status and "lora.gguf" in status
    assert "General text perplexity (forgetting)" in status and "Precision: " in status
    wait_for_text(page, "ft-samples", "What is the capital of France?")  # forgetting, side by side
    # The page's first run draws its loss curve (the plot was first drawn with no data).
    page.wait_for_function(
        "() => [...document.querySelectorAll('#ft-loss g.mark-line path')].some("
        "p => getComputedStyle(p).stroke !== 'none' && (p.getAttribute('d') || '').length > 1)",
        polling=200,
        timeout=30_000,
    )
    # The answers side by side fit the page: the last column is not pushed out of view.
    assert column_in_view(page, "ft-samples", "Tuned model")
    page.screenshot(path=str(ARTIFACTS / "finetune.png"), full_page=True)

    page.get_by_role("tab", name="Chat").click()
    page.locator("#model input").click()
    page.get_by_role("option", name="lora.gguf").first.wait_for()
    assert foreign_requests(page.requested) == []


def test_deletes_ask_first_and_cancel_or_another_choice_disarms(
    page: Any, running_app: RunningApp, tmp_path: Path
) -> None:
    """A delete's first click only asks (in red, naming what goes); Cancel or picking another
    item disarms; arm + confirm deletes, from the list and from the store."""
    title = "Say no."
    page.goto(running_app.url)
    page.locator("#chat-collection input").click()
    page.get_by_role("option", name="No documents (plain chat)").click()
    ask(page, title)
    saved = ConversationStore(running_app.models_dir.parent / "data" / "conversations.sqlite3")
    try:
        mine = [c.id for c in saved.conversations() if c.title == title]
        assert len(mine) == 1
        arm(page, "Delete conversation", f"“{title}”")
        time.sleep(1)  # a first click that deleted would have by now
        assert mine[0] in [c.id for c in saved.conversations()]
        assert title in page.locator("#chatbot").inner_text()
        page.locator("#delete-chat-cancel").click()
        disarmed(page, "Delete conversation", f"“{title}”")
        assert mine[0] in [c.id for c in saved.conversations()]
        arm(page, "Delete conversation", f"“{title}”").click()
        page.wait_for_function("() => !document.querySelector('#chatbot .message')", polling=200)
        assert settle(lambda: mine[0] not in [c.id for c in saved.conversations()])
    finally:
        saved.close()
    assert not any(
        o.startswith(title + " · ") for o in listed_options(page, "#conversations input")
    )

    kept, doomed = tmp_path / "kept notes.md", tmp_path / "doomed notes.md"
    kept.write_text("# Kept\n\nThe heron nests by the north pond.\n")
    doomed.write_text("# Doomed\n\nThe otter swims in the south river.\n")
    page.get_by_role("tab", name="Documents").click()
    with page.expect_response(lambda r: "/upload" in r.url and r.ok):
        page.locator("#upload-files input[type=file]").set_input_files([str(kept), str(doomed)])
    page.locator("#index").click()
    wait_for_text(page, "ingest-status", "Done")
    wait_for_text(page, "documents", "doomed notes.md")
    pick = page.locator("#document-to-delete input")
    pick.click()
    page.get_by_role("option", name="doomed notes.md", exact=True).click()
    arm(page, "Delete document", "doomed notes.md")
    page.locator("#delete-document-cancel").click()
    disarmed(page, "Delete document", "doomed notes.md")
    arm(page, "Delete document", "doomed notes.md")
    pick.click()
    page.get_by_role("option", name="kept notes.md", exact=True).click()  # another choice
    disarmed(page, "Delete document", "doomed notes.md")
    assert "doomed notes.md" in page.locator("#documents").first.inner_text()
    pick.click()
    page.get_by_role("option", name="doomed notes.md", exact=True).click()
    arm(page, "Delete document", "doomed notes.md").click()
    wait_for_text(page, "ingest-status", "Deleted doomed notes.md")
    page.reload()  # the list drawn afresh from the store
    page.get_by_role("tab", name="Documents").click()
    wait_for_text(page, "documents", "kept notes.md", timeout_ms=30_000)
    assert "doomed notes.md" not in page.locator("#documents").first.inner_text()
    arm(page, "Delete collection", "collection default and its")
    page.locator("#delete-collection-cancel").click()
    disarmed(page, "Delete collection", "collection default")
    assert "kept notes.md" in page.locator("#documents").first.inner_text()
    page.get_by_role("tab", name="Models").click()
    assert not armed_look(page.locator("#delete-model"))  # red only once armed
    assert foreign_requests(page.requested) == []
