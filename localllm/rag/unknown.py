"""Words of a question that the documents never use, and which of them name something.

A question about "readxl" or "Docker" put to manuals that never mention either has no answer in
them, however close the rest of its words come; the model, given passages on the same topic, writes
an answer from them anyway. A word no passage holds is a name when it is written like one (a
capital inside the question, a digit, "YubiKey") or is no word of general English: not a whole word
of the embedder's own vocabulary, nor one with a common ending taken off ("fillable" is "fill").
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

ENDINGS = ("able", "ible", "ers", "er", "est", "ed", "ing", "es", "s", "ly")


@functools.cache
def general_words(model_path: Path | None) -> frozenset[str]:
    """The whole words of a WordPiece vocabulary (the embedder's vocab.txt); empty without one."""
    if model_path is None:
        return frozenset()
    try:
        lines = (Path(model_path) / "vocab.txt").read_text(encoding="utf-8").split()
    except OSError:
        return frozenset()
    return frozenset(w for w in lines if w.isalpha() and not w.startswith("##"))


def is_name(word: str, question: str, general: frozenset[str]) -> bool:
    if any(c.isdigit() for c in word) or any(c.isupper() for c in word[1:]):
        return True
    first = re.findall(r"\b\w\w+\b", question)[:1]
    if word[0].isupper() and word not in first:
        return True
    if not general:
        return False
    lower = word.lower()
    if lower in general:
        return False
    return not any(
        lower.endswith(e) and len(lower) - len(e) >= 3 and lower[: -len(e)] in general
        for e in ENDINGS
    )


def never_mentioned(
    question: str,
    unknown: list[str],
    content_words: int,
    *,
    share: float,
    names: bool,
    general: frozenset[str],
) -> list[str]:
    """The words to decline on: the names among `unknown` (the question's words no passage holds),
    or all of them when they are at least `share` of its content words; else none."""
    if names and (named := [w for w in unknown if is_name(w, question, general)]):
        return named
    if share <= 1.0 and content_words and len(unknown) / content_words >= share:
        return unknown
    return []
