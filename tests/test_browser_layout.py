"""The Chat tab's layout in a real browser (Debian's Chromium, driven by Playwright): the page
viewer large and in view with the printed page number, values shown whole, a phone's first
screen, and the header's dark-mode switch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ARTIFACTS, CHROMIUM_ARGS, RunningApp, chromium_path, require
from tests.labelled_pdf import labelled_pdf
from tests.test_browser import foreign_requests, index_file, wait_for_text

pytestmark = pytest.mark.browser

COLLECTION = "marsh-layout"
QUESTION = "Where does the grey heron nest?"


def marsh_pdf(path: Path) -> Path:
    """Four pages printed i, ii, 1, 2: the herons are on the file's page 3, printed 1."""

    def page(title: str, sentence: str) -> str:
        words = ((sentence + " ") * 8).split()
        return "\n".join([title, *(" ".join(words[i : i + 12]) for i in range(0, len(words), 12))])

    return labelled_pdf(
        path,
        [
            page("Preface", "This handbook describes the marsh birds of the valley."),
            page("Contents", "Chapter one herons. Chapter two otters and their dens."),
            page("Chapter 1 Herons", "The grey heron nests in the tall reeds by the north pond."),
            page("Chapter 2 Otters", "The river otter sleeps in a den under the old willow."),
        ],
    )


@pytest.fixture
def browser(running_app: RunningApp) -> Iterator[Any]:
    exe = chromium_path()
    require(exe is not None, "Debian's chromium is not installed (make browser installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def open_page(browser: Any, url: str, width: int, height: int) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(180_000)
    page.requested = []
    page.on("request", lambda r: page.requested.append(r.url))
    page.goto(url)
    page.locator("#message textarea").wait_for()
    return page


def box(page: Any, selector: str) -> dict[str, float]:
    """The first visible match's box on the screen (Gradio may keep hidden copies of a block)."""
    return page.evaluate(
        "(s) => { const e = [...document.querySelectorAll(s)].find(e => e.offsetParent !== null);"
        " const r = e.getBoundingClientRect();"
        " return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width}; }",
        selector,
    )


def clipped(page: Any, selector: str) -> list[str]:
    """The values of the inputs matched that are wider than their box (cut off on screen)."""
    return page.evaluate(
        "(s) => [...document.querySelectorAll(s)].filter(e => e.offsetParent !== null"
        " && e.scrollWidth > e.clientWidth + 1).map(e => e.value)",
        selector,
    )


def ingest(page: Any, pdf: Path) -> None:
    index_file(page, pdf, COLLECTION)
    page.get_by_role("tab", name="Chat").click()


def choose(page: Any, selector: str, option: str) -> None:
    page.locator(selector).click()
    page.get_by_role("option", name=option, exact=True).click()


def test_the_page_viewer_is_large_in_view_and_names_the_printed_page(
    browser: Any, running_app: RunningApp, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_page(browser, running_app.url, 1280, 800)
    ingest(page, marsh_pdf(tmp_path / "marsh.pdf"))
    choose(page, "#chat-collection input", "No documents (plain chat)")
    assert clipped(page, "#chat-collection input, #model input") == [], "values shown whole"
    choose(page, "#chat-collection input", COLLECTION)
    assert clipped(page, "#chat-collection input, #model input") == []

    message = page.locator("#message textarea")
    message.fill(QUESTION)
    message.press("Enter")
    wait_for_text(page, "sources", "marsh.pdf · p. 3 (printed 1)")
    wait_for_text(page, "chatbot", "Sources:")
    # The in-chat list: one source a line, each with the number printed on its page.
    listed = page.locator("#chatbot .message.bot sub").first.inner_text()
    lines = [line for line in listed.splitlines() if line.strip()]
    assert lines[0] == "Sources:" and all(line.startswith("[") for line in lines[1:]), listed
    assert len(lines) > 2 and "p. 3 (printed 1)" in listed, listed

    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#sources label", has_text="p. 3 (printed 1)").first.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#source-page img')].some("
        "i => i.offsetParent !== null && i.complete && i.naturalWidth > 500)",
        polling=200,
    )
    wait_for_text(page, "source-page", "Page 3 (printed page 1)")
    # Scrolled to: the viewer's top is on the screen, in its upper half.
    page.wait_for_function(
        "() => { const r = [...document.querySelectorAll('#source-page')].find("
        "e => e.offsetParent !== null).getBoundingClientRect();"
        " return r.top >= -1 && r.top < innerHeight / 2; }",
        polling=200,
        timeout=30_000,
    )
    image, column = box(page, "#source-page img"), box(page, ".chat-main")
    assert image["width"] >= 600, image  # it was 363 px beside the passage
    assert image["width"] >= 0.9 * column["width"], (image, column)
    page.screenshot(path=str(ARTIFACTS / "layout-viewer.png"))

    # Dark mode from the header: in place (the chat stays), remembered on the next visit.
    shown = page.locator("#chatbot .message").count()
    page.locator("#theme-toggle").click()
    page.wait_for_function("() => document.body.classList.contains('dark')", polling=200)
    assert page.locator("#chatbot .message").count() == shown > 0
    assert QUESTION in page.locator("#chatbot").inner_text()
    background = page.evaluate(
        "() => getComputedStyle(document.querySelector('#chatbot')).backgroundColor"
    )
    page.screenshot(path=str(ARTIFACTS / "layout-dark.png"))
    page.reload()
    page.locator("#message textarea").wait_for()
    page.wait_for_function("() => document.body.classList.contains('dark')", polling=200)
    page.locator("#theme-toggle").click()
    page.wait_for_function("() => !document.body.classList.contains('dark')", polling=200)
    light = page.evaluate(
        "() => getComputedStyle(document.querySelector('#chatbot')).backgroundColor"
    )
    assert light != background, "the page's colours follow the switch"
    assert foreign_requests(page.requested) == [], "the page asked a host other than the app's own"
    page.context.close()


def test_a_phone_shows_the_message_box_on_its_first_screen(
    browser: Any, running_app: RunningApp
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_page(browser, running_app.url, 390, 844)
    message, chatbot = box(page, "#message textarea"), box(page, "#chatbot")
    assert message["top"] >= 0 and message["bottom"] <= 844, message
    assert chatbot["bottom"] <= message["top"], "the conversation above the message box"
    send, stop = box(page, "#send"), box(page, "#stop")
    assert message["right"] - message["left"] >= 0.75 * 390, "the message box the whole width"
    assert send["top"] >= message["bottom"] and send["bottom"] <= 844, "Send under it, on screen"
    assert stop["right"] <= 390 and abs(send["top"] - stop["top"]) < 2, "Send and Stop side by side"
    settings = box(page, "#chat-collection")
    assert settings["top"] > message["bottom"], "the side columns go under the chat"
    assert clipped(page, "#chat-collection input, #model input") == []
    page.screenshot(path=str(ARTIFACTS / "layout-phone.png"))
    assert foreign_requests(page.requested) == []
    page.context.close()
