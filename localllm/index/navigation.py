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


def is_navigation(text: str) -> bool:
    """Whether most of the passage's lines end in dot leaders and a page number (contents, an
    index), or it is a few words with no punctuation (a heading, a running header)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return True
    leaders = len(_LEADER_RUN.findall(text))
    paged = sum(bool(_LEADERS.search(line) or _PAGE_AT_END.search(line)) for line in lines)
    if leaders >= 3 or (leaders and paged * 3 >= len(lines)):
        return True
    words = sum(len(line.split()) for line in lines)
    return words <= HEADING_WORDS and not any(_SENTENCE_END.search(line) for line in lines)
