"""Ranking metrics for retrieval evals, and the loader for their question sets.

A retrieval result is a ranked list of ``(file name, pages of the chunk)``; a question's gold answer
is a ``(file name, 1-based page)``. A chunk is relevant when it comes from the gold file and its pages
include the gold page. Everything here is pure Python so that it loads without the heavy stack.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localllm.errors import LocalLLMError

Retrieved = Sequence[tuple[str, Sequence[int]]]


class EvalDataError(LocalLLMError):
    """An eval set file that cannot be read or has a malformed line."""


@dataclass(frozen=True)
class QAItem:
    question: str
    doc: str | None
    page: int | None
    answer_start: str | None = None
    answer: str | None = None  # the reference answer (`eval compare` scores answers against it)


@dataclass
class RetrievalScores:
    questions: int
    hit1: float
    hit5: float
    hit10: float
    mrr: float
    ndcg10: float
    p50_ms: float
    p95_ms: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _is_relevant(hit: tuple[str, Sequence[int]], doc: str, page: int) -> bool:
    name, pages = hit
    return name == doc and page in pages


def first_hit_rank(retrieved: Retrieved, doc: str, page: int) -> int | None:
    """1-based rank of the first chunk from ``doc`` whose pages include ``page``, or None."""
    for rank, hit in enumerate(retrieved, start=1):
        if _is_relevant(hit, doc, page):
            return rank
    return None


def hit_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of questions whose first relevant chunk is at rank ``k`` or better (0.0 for none)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if not ranks:
        return 0.0
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def mrr(ranks: Sequence[int | None], cutoff: int | None = None) -> float:
    """Mean reciprocal rank; a miss, or a rank past ``cutoff``, counts 0 (0.0 for no questions)."""
    if cutoff is not None and cutoff < 1:
        raise ValueError(f"cutoff must be at least 1, not {cutoff}")
    if not ranks:
        return 0.0
    total = sum(1.0 / r for r in ranks if r is not None and (cutoff is None or r <= cutoff))
    return total / len(ranks)


def _dcg(gains: Sequence[bool]) -> float:
    return sum(1.0 / math.log2(i + 2) for i, g in enumerate(gains) if g)


def ndcg_at(relevance_lists: Sequence[Sequence[bool]], k: int = 10) -> float:
    """Mean binary-gain nDCG@k.

    Each list says, rank by rank, whether that chunk is relevant. The ideal DCG puts all the relevant
    items of the list (at most ``k``) first; a question with no relevant item scores 0.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if not relevance_lists:
        return 0.0
    total = 0.0
    for rels in relevance_lists:
        n_relevant = min(sum(1 for r in rels if r), k)
        if n_relevant == 0:
            continue
        total += _dcg(list(rels)[:k]) / _dcg([True] * n_relevant)
    return total / len(relevance_lists)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, as numpy.percentile's default."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, not {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    frac = pos - lo
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * frac)


def score_retrieval(
    results: Sequence[Retrieved],
    gold: Sequence[tuple[str, int]],
    latencies_s: Sequence[float],
) -> RetrievalScores:
    """Scores for one ranked result list per question, against that question's (doc, page)."""
    if not (len(results) == len(gold) == len(latencies_s)):
        raise ValueError(
            f"need one result list, gold answer and latency per question; got "
            f"{len(results)}, {len(gold)} and {len(latencies_s)}"
        )
    if not results:
        raise ValueError("no questions to score")
    ranks = [first_hit_rank(res, doc, page) for res, (doc, page) in zip(results, gold, strict=True)]
    relevance = [
        [_is_relevant(hit, doc, page) for hit in res]
        for res, (doc, page) in zip(results, gold, strict=True)
    ]
    ms = [s * 1000.0 for s in latencies_s]
    return RetrievalScores(
        questions=len(results),
        hit1=hit_at(ranks, 1),
        hit5=hit_at(ranks, 5),
        hit10=hit_at(ranks, 10),
        mrr=mrr(ranks),
        ndcg10=ndcg_at(relevance, 10),
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
    )


def _item(row: Any, *, need_answer: bool = False) -> QAItem:
    """One parsed JSON line as a QAItem; raises ValueError saying what is wrong with it."""
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing or empty 'question'")
    answer = row.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise ValueError("'answer' must be a string or null")
    if need_answer and not (answer or "").strip():
        raise ValueError("missing or empty 'answer' (the reference answer to score against)")
    doc = row.get("doc")
    page = row.get("page")
    answer_start = row.get("answer_start")
    if doc is not None and (not isinstance(doc, str) or not doc.strip()):
        raise ValueError("'doc' must be a file name or null")
    if doc is None:
        if page is not None:
            raise ValueError("'page' given without 'doc'")
    elif page is None:
        raise ValueError("'doc' given without 'page'")
    elif isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise ValueError(f"'page' must be a positive integer, not {page!r}")
    if answer_start is not None and not isinstance(answer_start, str):
        raise ValueError("'answer_start' must be a string or null")
    return QAItem(question=question, doc=doc, page=page, answer_start=answer_start, answer=answer)


def load_qa(path: Path, *, need_answer: bool = False) -> list[QAItem]:
    """Read a JSONL eval set (blank lines skipped); a bad line raises EvalDataError naming it.
    With `need_answer`, every line must hold a reference "answer"."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EvalDataError(f"Cannot read the eval set {path}: {e}") from e
    items: list[QAItem] = []
    # split on newlines only: str.splitlines() would also break at U+2028 etc. inside strings
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalDataError(f"{path}, line {lineno}: invalid JSON ({e.msg})") from e
        try:
            items.append(_item(row, need_answer=need_answer))
        except ValueError as e:
            raise EvalDataError(f"{path}, line {lineno}: {e}") from e
    return items
