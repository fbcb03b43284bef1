"""What the browser test of citation links checks, beside the page: the highlight drawn on the page
image shown, against the one the core computes for the sentence's span, from the saved answer."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from localllm.chat.conversations import ConversationStore, StoredMessage
from localllm.chat.sources import highlighted, squash
from localllm.index.pages import render_page
from localllm.rag.prompt import Source
from localllm.ui.citations import Citation

WIDTH = 900  # what the Chat tab draws a page at


def citation_links(page: Any) -> list[str]:
    """The citation links of the last answer, in order."""
    return (
        page.locator("#chatbot .message.bot")
        .last.locator("a[href*='#cite-']")
        .evaluate_all("links => links.map(a => a.getAttribute('href'))")
    )


def answer_marks(page: Any) -> dict[str, Any]:
    """What shows the last answer's check: its unsupported marks, citation links, folded words."""
    bot = page.locator("#chatbot .message.bot").last
    folds = bot.locator("details")
    return {
        "unsupported": bot.inner_text().count("⚠"),
        "links": citation_links(page),
        "fold": folds.first.text_content() if folds.count() else None,
    }


def last_answer(store: ConversationStore, question: str) -> StoredMessage:
    """The saved answer of the conversation that asked `question` first."""
    [chat] = [c for c in store.conversations() if c.title == question]
    return [m for m in store.messages(chat.id) if m.role == "assistant"][-1]


def assert_marks_as_saved(marks: dict[str, Any], answer: StoredMessage) -> None:
    """The marks shown are those of the saved answer's check: a link per [n] of a source, each to
    that answer, and the model's own words folded when what is shown is not what it wrote."""
    numbers = {s["n"] for s in answer.sources}
    cites = [int(n) for n in re.findall(r"\[(\d+)\]", answer.content) if int(n) in numbers]
    assert len(marks["links"]) == len(cites), (marks, answer.content)
    for href in marks["links"]:
        cited = Citation.parse(href.split("#cite-", 1)[1])
        assert cited is not None and cited.message_id == answer.id, href
    model_text = answer.details.get("model_answer")
    folded = answer.details.get("outcome") in ("quoted", "unsupported") and model_text not in (
        None,
        "",
        answer.content,
    )
    assert (marks["fold"] is not None) == folded, (marks, answer.details.get("outcome"))


def highlight_mask(image: Image.Image) -> np.ndarray:
    """The rows of the page that are highlighted: a tenth of their width or more is translucent
    yellow over the paper (rows, not pixels: the lossy image the browser gets blurs the edges)."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    yellow = (r > 225) & (g > 205) & (b < 200) & (r - b > 50)
    return yellow.sum(axis=1) > 0.1 * yellow.shape[1]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (1.0 for two empty ones)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def shown_page(page: Any, before: str | None) -> tuple[str, Image.Image]:
    """The page image the Chat tab shows, once it is not the one shown `before`."""
    src = page.wait_for_function(
        "(before) => { const i = [...document.querySelectorAll('#source-page img')].find("
        "i => i.offsetParent !== null && i.complete && i.naturalWidth > 500);"
        " return i && i.src !== before ? i.src : null; }",
        arg=before,
        polling=200,
    ).json_value()
    body = page.request.get(src).body()
    return src, Image.open(io.BytesIO(body)).convert("RGB")


def expected_highlight(
    store: ConversationStore, pdf: Path, href: str
) -> tuple[Citation, Source, int, np.ndarray, list[np.ndarray]]:
    """For a citation link: what it cites, its source, the page to show, the highlight the core
    draws there for the link's span alone, and those it must not be (all the source's spans, the
    whole passage)."""
    cited = Citation.parse(href.split("#cite-", 1)[1])
    assert cited is not None and cited.span is not None, href
    message = store.message(cited.message_id)
    source = next(Source.from_dict(s) for s in message.sources if s["n"] == cited.n)
    details = message.details
    if details["outcome"] == "quoted":
        assert cited.span == source.spans[0], "the passage quoted"
    else:
        claims = [c["span"] for c in details["attribution"] if c["source"] == cited.n]
        assert list(cited.span) in claims, "the span of a sentence it cites"
    number, boxes = highlighted(pdf, source, [cited.span])
    others = []
    for spans in (source.spans, []):
        other_page, other = highlighted(pdf, source, spans)
        if other_page == number:
            others.append(highlight_mask(render_page(pdf, number, other, width=WIDTH)))
    one = highlight_mask(render_page(pdf, number, boxes, width=WIDTH))
    return cited, source, number, one, others


def check_citation(
    page: Any, store: ConversationStore, pdf: Path, href: str, before: str | None
) -> None:
    """Click a citation link; the page its sentence is on shows the lines of its support, alone
    (not all the source's spans, nor the whole passage, where those differ), in view, with its
    source chosen."""
    cited, source, number, one, others = expected_highlight(store, pdf, href)
    page.locator(f"#chatbot a[href='{href}']").last.click()
    _, image = shown_page(page, before)
    assert page.url.split("#")[0] == page.url, "a click on a citation does not navigate"
    label = page.locator("#source-page").first.inner_text()
    assert re.search(rf"\bPage {number}\b", label), label
    drawn = highlight_mask(image)
    assert overlap(drawn, one) > 0.9, "the sentence's support is highlighted"
    unlike = [other for other in others if overlap(one, other) < 0.9]
    assert all(overlap(drawn, other) < 0.9 for other in unlike), "not all spans, nor the passage"
    passage = squash(page.locator("#source-passage").first.inner_text())
    assert "Supports the sentence you clicked" in passage
    assert squash(source.text[cited.span[0] : cited.span[1]]) in passage
    chosen = page.locator("#sources input:checked").evaluate_all("els => els.map(e => e.value)")
    assert chosen == [str(cited.n)], chosen
    page.wait_for_function(
        "() => { const r = [...document.querySelectorAll('#source-page')].find("
        "e => e.offsetParent !== null).getBoundingClientRect();"
        " return r.top >= -1 && r.top < innerHeight / 2; }",
        polling=200,
        timeout=30_000,
    )
