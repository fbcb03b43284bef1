"""Chat basics in a real browser (Debian's Chromium, driven by Playwright), issue 14 item 9: the
last answer regenerated in place (the old one kept, superseded), the last question edited, a
stopped or cut answer marked (also once reopened), the saved conversations searched."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localllm.chat.conversations import ConversationStore, StoredMessage
from localllm.ui.chat_view import CUT_MARKS
from tests.browser_deletes import listed_options, settle
from tests.conftest import ARTIFACTS, RunningApp
from tests.corpus import one_page_pdf
from tests.test_browser import (
    ask,
    foreign_requests,
    index_file,
    open_saved,
    wait_for_answer,
    wait_for_text,
)

pytestmark = pytest.mark.browser

STOPPED, CUT = "⏹ Stopped", "Cut at the token limit"
LAST_ANSWER = "[...document.querySelectorAll('#chatbot .message.bot')].pop()"


@pytest.fixture
def saved(running_app: RunningApp) -> Iterator[ConversationStore]:
    """The app's own conversation store, opened beside it."""
    store = ConversationStore(running_app.models_dir.parent / "data" / "conversations.sqlite3")
    yield store
    store.close()


def squashed(text: str) -> str:
    return " ".join(text.split())


def as_shown(message: StoredMessage) -> str:
    """A saved answer as the Chatbot shows it: its text, and its mark when it was cut short
    (whether the model reaches the token limit depends on the CPU it runs on)."""
    cut = CUT_MARKS.get(str(message.details.get("cut")))
    return squashed(f"{message.content} {cut}" if cut else message.content)


def plain_chat(page: Any, temperature: str, max_tokens: str) -> None:
    """No documents, and the Parameters set: the same answers every run, short ones in time."""
    page.locator("#chat-collection input").click()
    page.get_by_role("option", name="No documents (plain chat)").click()
    page.get_by_role("button", name="Parameters").click()
    set_number(page, "Temperature", temperature)
    set_number(page, "Max new tokens", max_tokens)


def send_and_wait_for(page: Any, text: str, chars: int) -> None:
    """Send `text`; return once more than `chars` characters of its answer are shown."""
    box = page.locator("#message textarea")
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(
        f"(n) => {{ const b = {LAST_ANSWER}; return b && b.innerText.trim().length > n; }}",
        arg=chars,
        polling=100,
    )


def set_number(page: Any, name: str, value: str) -> None:
    box = page.get_by_role("spinbutton", name=name)
    box.fill(value)
    box.press("Enter")


def shown_messages(page: Any) -> list[tuple[str, str]]:
    """The Chatbot's messages: (role, text)."""
    return [
        ("user" if "user" in (m.get_attribute("class") or "") else "assistant", m.inner_text())
        for m in page.locator("#chatbot .message.user, #chatbot .message.bot").all()
    ]


def titles(page: Any) -> list[str]:
    """The saved list's titles, without the date each ends with."""
    return [
        re.sub(r"^✓\s*", "", option).rsplit(" · ", 1)[0]
        for option in listed_options(page, "#conversations input")
    ]


def conversation_titled(saved: ConversationStore, title: str) -> str:
    found = [c.id for c in saved.conversations() if c.title == title]
    assert len(found) == 1, [c.title for c in saved.conversations()]
    return found[0]


def saved_once(saved: ConversationStore, conversation: str, count: int) -> list[StoredMessage]:
    """The conversation's messages, superseded ones too, once `count` of them are saved."""
    assert settle(lambda: len(saved.messages(conversation, superseded=True)) >= count)
    return saved.messages(conversation, superseded=True)


def test_regenerate_and_edit_replace_the_last_turn_and_the_store_keeps_the_old(
    page: Any, running_app: RunningApp, saved: ConversationStore
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cat, horse = "Write one sentence about a cat.", "Write one sentence about a horse."
    page.goto(running_app.url)
    plain_chat(page, "0", "32")
    ask(page, cat)
    first = page.locator("#chatbot .message.bot").last.inner_text()
    conversation = conversation_titled(saved, cat)

    # Regenerate (the Retry button under the answer): at temperature 0 a sampled answer, in place.
    page.locator("#chatbot button[aria-label='Retry']").click()
    page.wait_for_function(
        f"(old) => {{ const b = {LAST_ANSWER}; return b && b.innerText.trim()"
        " && b.innerText !== old; }",
        arg=first,
        polling=200,
    )
    wait_for_answer(page)
    replaced, replacement = saved_once(saved, conversation, 3)[1:]
    assert replaced.superseded_by == replacement.id and replacement.superseded_by is None
    assert as_shown(replaced) == squashed(first)
    shown = shown_messages(page)
    assert [role for role, _ in shown] == ["user", "assistant"], "the new answer is in place"
    assert squashed(shown[1][1]) == as_shown(replacement) != squashed(first)
    (pair,) = [r for r in saved.regenerations() if r.conversation_id == conversation]
    assert (pair.question, pair.replaced_id, pair.replacement_id, pair.kept) == (
        cat,
        replaced.id,
        replacement.id,
        True,
    )
    page.screenshot(path=str(ARTIFACTS / "chat-regenerated.png"), full_page=True)

    # Edit the last question (its Edit button, then Submit): asked anew, the old turn kept.
    page.locator(
        "#chatbot .message.user button[aria-label='Edit'], #chatbot button[aria-label='Edit']"
    ).last.click()
    editor = page.locator("#chatbot textarea")
    editor.fill(horse)
    page.locator("#chatbot button[aria-label='Submit']").click()
    wait_for_text(page, "chatbot", horse)
    page.wait_for_function(
        f"(old) => {{ const b = {LAST_ANSWER}; return b && b.innerText.trim()"
        " && b.innerText !== old; }",
        arg=shown[1][1],
        polling=200,
    )
    wait_for_answer(page)
    everything = saved_once(saved, conversation, 5)
    asked, answered = saved.messages(conversation)
    assert (asked.role, asked.content, answered.role) == ("user", horse, "assistant")
    old = {m.content: m.superseded_by for m in everything if m.superseded_by}
    assert old[cat] == asked.id and old[replacement.content] == asked.id
    shown = shown_messages(page)
    assert [role for role, _ in shown] == ["user", "assistant"]
    assert shown[0][1].strip() == horse and cat not in page.locator("#chatbot").inner_text()
    assert squashed(shown[1][1]) == as_shown(answered)
    assert saved.get(conversation).title == horse, "the title was the first question's own"

    # Reopened after a reload: only what replaced the old turn is shown.
    page.reload()
    open_saved(page, horse)
    assert [squashed(text) for _, text in shown_messages(page)] == [horse, as_shown(answered)]
    assert foreign_requests(page.requested) == []


def test_a_stopped_or_cut_answer_is_marked_and_search_narrows_the_saved_list(
    page: Any, running_app: RunningApp, saved: ConversationStore
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dragon, rome = "Write a long story about a dragon.", "Write a long essay about Rome."
    page.goto(running_app.url)
    plain_chat(page, "0", "512")  # a dragon story the bundled model makes long at temperature 0

    # Stop, once the answer has begun: it ends there, saved and marked.
    # Long enough to hold a word of its own for the search below, well short of its end.
    send_and_wait_for(page, dragon, 150)
    page.locator("#stop").click()
    wait_for_text(page, "chatbot", STOPPED, timeout_ms=60_000)
    wait_for_answer(page)
    stopped = conversation_titled(saved, dragon)
    answer = saved.messages(stopped)[-1]
    assert answer.details == {"cut": "stopped"}
    assert STOPPED in page.locator("#chatbot .message.bot").last.inner_text()
    assert squashed(answer.content) in squashed(page.locator("#chatbot").inner_text())

    # The token limit: the answer says it was cut there.
    set_number(page, "Max new tokens", "16")
    page.locator("#new-chat").click()
    page.wait_for_function("() => !document.querySelector('#chatbot .message')", polling=200)
    ask(page, rome)
    assert CUT in page.locator("#chatbot .message.bot").last.inner_text()
    assert saved.messages(conversation_titled(saved, rome))[-1].details == {"cut": "length"}
    page.screenshot(path=str(ARTIFACTS / "chat-cut.png"), full_page=True)

    # Search: by title, by a word only the stopped answer holds (in another case), and cleared.
    search = page.locator("#conversation-search textarea")
    title_words = set(re.findall(r"\w+", f"{dragon} {rome}".lower()))
    word = next(
        w for w in re.findall(r"[A-Za-z]{6,}", answer.content) if w.lower() not in title_words
    )

    def listed(query: str) -> list[str]:
        """The titles the saved list shows once `query` is typed, checked against the store's."""
        search.fill(query)
        expected = [c.title for c in saved.search(query)]
        assert settle(lambda: titles(page) == expected), (query, titles(page), expected)
        return expected

    everything = listed("")
    assert dragon in everything and rome in everything
    assert listed("DRAGON") == [dragon], "by title, in any case"
    assert listed(word.upper()) == [dragon], f"by a word of the answer only: {word}"
    assert rome in listed("rome") and dragon not in listed("rome")
    assert listed("") == everything
    page.screenshot(path=str(ARTIFACTS / "chat-search.png"), full_page=True)

    # Reopened after a reload, the stopped answer still says so; each saved chat shows its date.
    page.reload()
    open_saved(page, dragon)
    assert STOPPED in page.locator("#chatbot .message.bot").last.inner_text()
    dated = listed_options(page, "#conversations input")
    assert all(re.search(r" · (\d\d:\d\d|\d{4}-\d\d-\d\d)$", o) for o in dated), dated
    assert foreign_requests(page.requested) == []


def heron_pdf(folder: Path) -> Path:
    line = b"The grey heron nests by the north pond every spring, in the tall reeds."
    path = folder / "heron notes.pdf"
    path.write_bytes(one_page_pdf(b"BT /F1 12 Tf 72 720 Td (" + line + b") Tj ET"))
    return path


def test_a_grounded_answer_regenerated_keeps_its_sources(
    page: Any, running_app: RunningApp, saved: ConversationStore, tmp_path: Path
) -> None:
    # Not test_browser_layout's question: the app (and its saved titles) is shared by the module.
    question = "Where does the grey heron nest in spring?"
    page.goto(running_app.url)
    index_file(page, heron_pdf(tmp_path), "heron-chat")
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-collection input").click()
    page.get_by_role("option", name="heron-chat", exact=True).click()
    ask(page, question)
    wait_for_text(page, "chatbot", "heron notes.pdf")
    conversation = conversation_titled(saved, question)

    page.locator("#chatbot button[aria-label='Retry']").click()
    replaced, replacement = saved_once(saved, conversation, 3)[1:]
    wait_for_answer(page)
    assert replaced.superseded_by == replacement.id
    assert replacement.sources and replaced.sources, "both answers keep what they were given"
    assert "heron notes.pdf" in page.locator("#chatbot .message.bot").last.inner_text()
    assert page.locator("#chatbot .message.bot").count() == 1
    assert foreign_requests(page.requested) == []


def two_pages(page: Any, url: str, other_tokens: str) -> tuple[Any, Any]:
    """`page` set for a long answer, and a second page (its own browser context) for short ones."""
    page.goto(url)
    plain_chat(page, "0", "400")
    context = page.context.browser.new_context(viewport={"width": 1280, "height": 900})
    other = context.new_page()
    other.set_default_timeout(180_000)
    other.goto(url)
    plain_chat(other, "0", other_tokens)
    return context, other


def wait_in_queue(page: Any) -> None:
    """Until the page's Chatbot shows its answer's place in the queue."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('#chatbot .progress-text')]"
        ".some(e => e.innerText.includes('queue'))",
        polling=100,
    )


def test_stop_ends_an_answer_still_waiting_for_another_pages_and_only_that_one(
    page: Any, running_app: RunningApp, saved: ConversationStore
) -> None:
    """One model answers one page at a time: a second page's question waits in the queue, and its
    Stop, pressed while it waits, ends it as soon as its turn comes; the first page's answer goes
    on to its end."""
    story, fox = "Write a long story about a lighthouse keeper.", "Write one sentence about a fox."
    context, other = two_pages(page, running_app.url, "48")

    send_and_wait_for(page, story, 20)
    waiting = other.locator("#message textarea")
    waiting.fill(fox)
    waiting.press("Enter")
    # Its answer waits: the Chatbot shows its place in the queue, the question not yet.
    wait_in_queue(other)
    assert fox not in other.locator("#chatbot").inner_text()
    other.locator("#stop").click()

    wait_for_text(other, "chatbot", STOPPED)
    wait_for_answer(other)
    wait_for_answer(page)
    stopped = saved.messages(conversation_titled(saved, fox))[-1]
    assert stopped.role == "assistant" and stopped.details == {"cut": "stopped"}
    assert len(stopped.content.split()) < 10, "ended at once, not answered"
    told = saved.messages(conversation_titled(saved, story))[-1]
    assert told.details != {"cut": "stopped"} and len(told.content.split()) > 60
    assert STOPPED not in page.locator("#chatbot .message.bot").last.inner_text()
    assert foreign_requests(page.requested) == []
    context.close()


def test_stop_ends_an_edited_question_still_waiting_for_another_pages(
    page: Any, running_app: RunningApp, saved: ConversationStore
) -> None:
    """The last question edited while another page's answer is being written: the edit's answer
    waits in the queue, and a Stop pressed then ends it as soon as its turn comes."""
    story = "Write a long story about a mountain shepherd."
    owl, wren = "Write one sentence about an owl.", "Write one sentence about a wren."
    context, other = two_pages(page, running_app.url, "24")
    ask(other, owl)
    conversation = conversation_titled(saved, owl)

    send_and_wait_for(page, story, 20)
    other.locator("#chatbot button[aria-label='Edit']").last.click()
    other.locator("#chatbot textarea").fill(wren)
    other.locator("#chatbot button[aria-label='Submit']").click()
    wait_in_queue(other)
    other.locator("#stop").click()

    wait_for_text(other, "chatbot", STOPPED)
    wait_for_answer(other)
    wait_for_answer(page)
    asked, stopped = saved.messages(conversation)
    assert asked.content == wren and stopped.details == {"cut": "stopped"}
    assert len(stopped.content.split()) < 10, "ended at once, not answered"
    told = saved.messages(conversation_titled(saved, story))[-1]
    assert told.details != {"cut": "stopped"} and len(told.content.split()) > 60
    context.close()
