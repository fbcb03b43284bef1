"""Passages that only point elsewhere: a table of contents, an index, a heading with no text under it.

Such a passage shares every word of a question that names its section ("What is this FAQ?" is
also a contents line), so search ranks it high, yet it answers nothing; a grounded answer that
cites it cites a list of page numbers.
"""

from __future__ import annotations

import re

_LEADERS = re.compile(r"(?:\.\s*){3,}\s*[\dIVXLCivxlc]+\s*$")  # "What is this FAQ? . . . . 1"
_LEADER_RUN = re.compile(r"(?:\. ?){4,}")
_PAGE_AT_END = re.compile(r"\S\s+(?:\d+|[ivxlc]+)$")
_SENTENCE_END = re.compile(r"[.!?:;,)\]}\"'\u2019\u201d]$")
HEADING_WORDS = 8
HEADER_WORDS = 16  # a heading repeated at the top of a page, with the words around it
RUNNING_EXTRA = 3  # words beside the heading in a running header ("User Guide", "Page")


def is_navigation(text: str, section: str | None = None) -> bool:
    """Whether most of the passage's lines end in dot leaders and a page number (contents, an
    index), or it is a few words with no punctuation (a heading, a running header), or only its
    own section's heading with a page's running words ("User Guide Chapter 5 ... Page 65")."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return True
    leaders = len(_LEADER_RUN.findall(text))
    paged = sum(bool(_LEADERS.search(line) or _PAGE_AT_END.search(line)) for line in lines)
    if leaders >= 3 or (leaders and paged * 3 >= len(lines)):
        return True
    if any(_SENTENCE_END.search(line) for line in lines):
        return False
    words = [w for line in lines for w in line.split()]
    if len(words) <= HEADING_WORDS:
        return True
    return section is not None and len(words) <= HEADER_WORDS and _only_heading(words, section)


def _only_heading(words: list[str], section: str) -> bool:
    heading = {w.casefold() for w in section.split()}
    if len(heading) < 2:
        return False
    extra = [w for w in words if w.casefold() not in heading and not w.isdigit()]
    return len(extra) <= RUNNING_EXTRA
