"""How close an answer is to its reference: SQuAD's token F1, and ROUGE-L from `rouge-score`."""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import cache
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> list[str]:
    """SQuAD's answer normalisation: lower case, no punctuation or articles, split on spaces."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 (Rajpurkar et al., 2016): the harmonic mean of the shared tokens' precision
    and recall; 1.0 when both normalise to nothing, 0.0 when only one does."""
    said, wanted = normalize(prediction), normalize(reference)
    if not said or not wanted:
        return float(said == wanted)
    shared = sum((Counter(said) & Counter(wanted)).values())
    if not shared:
        return 0.0
    precision, recall = shared / len(said), shared / len(wanted)
    return 2 * precision * recall / (precision + recall)


@cache
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of stemmed tokens), as `rouge-score` computes
    it; its tokenizer keeps ASCII letters and digits only."""
    return float(_rouge().score(reference, prediction)["rougeL"].fmeasure)
