"""Citation links in a shown answer: each [n] opens source n's page, with the lines of the passage
that supports its sentence highlighted.

A link's address is a fragment, `#cite-<message id>-<n>-<start>-<end>` (or `#cite-<message id>-<n>`
for the whole source), so the Chatbot's sanitizer keeps it and a click goes nowhere. The Chat tab's
`citation_catcher` takes the click and hands the fragment to the server as a `cite` event.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from localllm.rag.attribute import without_marks
from localllm.rag.prompt import Source

CITE = "#cite-"
_MARK = re.compile(r"\[(\d+)\]")
_LINK = re.compile(r"(\d+)-(\d+)(?:-(\d+)-(\d+))?")
_END = ".!?:;\"')"  # what follows a sentence's citation mark (rag.attribute.cite_sentences)

# Brings the page viewer into view once it shows a page (it may appear only after the click).
_SCROLL_TO_PAGE = """
  let tries = 0;
  const scroll = () => {
    const viewer = [...document.querySelectorAll("#source-page")].find(
      (e) => e.offsetParent !== null && e.querySelector("img"));
    if (viewer) viewer.scrollIntoView({ block: "nearest" });
    else if (tries++ < 300) setTimeout(scroll, 100);
  };
  scroll();
"""

# Runs once the catcher is on the page; the click listener is added once per page, and always
# triggers the catcher mounted last. Capturing on the document takes the click before the
# Chatbot's own link handling. A source chosen in the list scrolls to its page too.
CATCH_CLICKS = (
    """
const hub = (window.localllmCitations = window.localllmCitations || {});
hub.trigger = trigger;
hub.showPage = () => {"""
    + _SCROLL_TO_PAGE
    + """};
if (!hub.listening) {
  hub.listening = true;
  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (target && target.closest("#sources label")) {
      hub.showPage();
      return;
    }
    const link = target ? target.closest('a[href*="#cite-"]') : null;
    if (!link) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    hub.trigger("cite", { link: link.getAttribute("href").split("#cite-").pop() });
  }, true);
}
"""
)

# After a citation's page is drawn: bring the page viewer into view.
SHOW_PAGE = "() => {" + _SCROLL_TO_PAGE + "}"


@dataclass(frozen=True)
class Citation:
    message_id: int
    n: int
    span: tuple[int, int] | None  # in source n's text; None: the whole source

    @property
    def href(self) -> str:
        where = f"-{self.span[0]}-{self.span[1]}" if self.span else ""
        return f"{CITE}{self.message_id}-{self.n}{where}"

    @classmethod
    def parse(cls, link: str) -> Citation | None:
        """A link's fragment (without its `#cite-`) as the catcher sends it; None if malformed."""
        m = _LINK.fullmatch(link.strip())
        if m is None:
            return None
        message_id, n, start, end = m.groups()
        span = (int(start), int(end)) if start is not None else None
        return cls(int(message_id), int(n), span)


def citation_catcher() -> gr.HTML:
    """An empty block whose script turns a click on a citation link into its `cite` event."""
    return gr.HTML(
        "",
        html_template="",
        js_on_load=CATCH_CLICKS,
        apply_default_css=False,
        container=False,
        padding=False,
        elem_id="citation-catcher",
        visible="hidden",
    )


def link_citations(
    text: str, message_id: int, sources: Sequence[Source], details: dict[str, Any]
) -> str:
    """`text` as shown, each [n] of a source a link: to the span that supports its sentence where
    the saved attribution says so, else to the whole source (an answer saved without it)."""
    numbers = {s.n for s in sources}
    spans = _spans_at(text, sources, details)

    def link(mark: re.Match[str]) -> str:
        n = int(mark.group(1))
        if n not in numbers:
            return mark.group(0)
        return f"[[{n}]]({Citation(message_id, n, spans.get(mark.start())).href})"

    return _MARK.sub(link, text)


def _spans_at(
    text: str, sources: Sequence[Source], details: dict[str, Any]
) -> dict[int, tuple[int, int]]:
    """Where in `text` a sentence's citation mark is, with the span of its source that supports
    the sentence: found by each supported claim's words, in answer order."""
    marks = list(_MARK.finditer(text))
    if details.get("outcome") == "quoted":  # one mark, at the end, for the passage quoted
        quoted = {s.n: s.spans[0] for s in sources if s.spans}
        last = marks[-1] if marks else None
        if last is None or int(last.group(1)) not in quoted:
            return {}
        return {last.start(): quoted[int(last.group(1))]}
    found: dict[int, tuple[int, int]] = {}
    at = 0
    for claim in details.get("attribution") or []:
        n, span = claim.get("source"), claim.get("span")
        words = without_marks(str(claim.get("sentence") or "")).rstrip(_END).rstrip()
        if n is None or not span or not words:
            continue
        start = text.find(words, at)
        if start < 0:
            continue
        after = start + len(words)
        mark = next((m for m in marks if m.start() >= after), None)
        if mark is None or int(mark.group(1)) != n or text[after : mark.start()].strip():
            continue
        found[mark.start()] = (int(span[0]), int(span[1]))
        at = mark.end()
    return found
