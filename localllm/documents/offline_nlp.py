"""unstructured's partitioners, made safe to run offline: no model download, no telemetry.

unstructured classifies each piece of text (title? narrative?) with word, sentence and part-of-speech
helpers in `unstructured.nlp.tokenize`, which load spaCy's en_core_web_sm and, when it is missing,
download it from GitHub and pip-install it into site-packages on first use. A private app must never
do that. Before any partitioner is imported, `prepare()` puts rule-based helpers in that module's
place, so spaCy (and the torch that thinc imports with it) is never loaded and no model is needed.
Tags are left empty: no text counts as "narrative", which only moves text between unstructured's
NarrativeText and Text categories, both plain text to us (see unstructured_reader.kind_of).

unstructured also pings its host on import and on every partition unless DO_NOT_TRACK or
SCARF_NO_ANALYTICS is set, and prints an advertisement unless UNSTRUCTURED_DISABLE_NOTICE=1:
`prepare()` sets all three, whether or not privacy.apply_privacy ran first.
"""

from __future__ import annotations

import os
import re
import sys
import types
from typing import Any, NoReturn

_MODULE = "unstructured.nlp.tokenize"
_QUIET = {"DO_NOT_TRACK": "1", "SCARF_NO_ANALYTICS": "true", "UNSTRUCTURED_DISABLE_NOTICE": "1"}
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=\S)")


def word_tokenize(text: str) -> list[str]:
    """Words, numbers and single punctuation marks, in order."""
    return _WORD.findall(str(text))


def sent_tokenize(text: str) -> list[str]:
    """Sentences split after . ! or ? followed by white space."""
    return [s.strip() for s in _SENTENCE_END.split(str(text)) if s.strip()]


def pos_tag(text: str) -> list[tuple[str, str]]:
    """Every word with an empty tag: there is no tagger model offline."""
    return [(word, "") for word in word_tokenize(text)]


def _refuse_model_download(*_: Any, **__: Any) -> NoReturn:
    raise RuntimeError("unstructured tried to download a spaCy model: not allowed offline")


def prepare() -> None:
    """Call before importing any unstructured partitioner. Safe to call again."""
    for key, value in _QUIET.items():
        if not os.environ.get(key, "").strip():  # an empty DO_NOT_TRACK does not opt out
            os.environ[key] = value
    loaded = sys.modules.get(_MODULE)
    if loaded is None:
        stub = types.ModuleType(_MODULE, "Rule-based stand-ins for unstructured's spaCy helpers.")
        stub.word_tokenize = word_tokenize  # type: ignore[attr-defined]
        stub.sent_tokenize = sent_tokenize  # type: ignore[attr-defined]
        stub.pos_tag = pos_tag  # type: ignore[attr-defined]
        sys.modules[_MODULE] = stub
    elif loaded.__dict__.get("pos_tag") is not pos_tag:
        # The real module came first (the bench imports unstructured itself): it must not download,
        # and the text classifiers get the same rule-based helpers as in the app.
        loaded._install_spacy_model = _refuse_model_download  # type: ignore[attr-defined]
    from unstructured.partition import text_type

    text_type.word_tokenize = word_tokenize  # type: ignore[attr-defined]
    text_type.sent_tokenize = sent_tokenize  # type: ignore[attr-defined]
    text_type.pos_tag = pos_tag  # type: ignore[attr-defined]
