"""Retrieval metrics on small hand-computed cases, and the eval-set loader on good and bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from localllm.errors import LocalLLMError
from localllm.eval.metrics import (
    EvalDataError,
    QAItem,
    RetrievalScores,
    first_hit_rank,
    hit_at,
    load_qa,
    mrr,
    ndcg_at,
    percentile,
    score_retrieval,
)
from tests.conftest import ROOT, require

SHARED_EVAL = ROOT.parent / "shared" / "eval" / "dev_qa.jsonl"
BENCH_EVAL = ROOT / "bench" / "eval"


# first_hit_rank


def test_first_hit_rank_finds_the_first_chunk_from_the_doc_covering_the_page() -> None:
    retrieved = [("a.pdf", [3, 4]), ("b.pdf", [5]), ("a.pdf", [5, 6]), ("a.pdf", [5])]
    assert first_hit_rank(retrieved, "a.pdf", 5) == 3
    assert first_hit_rank(retrieved, "a.pdf", 4) == 1
    assert first_hit_rank(retrieved, "b.pdf", 5) == 2


def test_first_hit_rank_is_none_on_a_miss() -> None:
    retrieved = [("a.pdf", [3]), ("b.pdf", [7])]
    assert first_hit_rank(retrieved, "b.pdf", 3) is None, "right page, wrong doc"
    assert first_hit_rank(retrieved, "a.pdf", 7) is None
    assert first_hit_rank([], "a.pdf", 1) is None


# hit_at and mrr


def test_hit_at_is_the_share_of_questions_hit_by_rank_k() -> None:
    ranks = [1, 3, None, 10, 11]
    assert hit_at(ranks, 1) == pytest.approx(1 / 5)
    assert hit_at(ranks, 3) == pytest.approx(2 / 5)
    assert hit_at(ranks, 10) == pytest.approx(3 / 5)
    assert hit_at(ranks, 100) == pytest.approx(4 / 5)
    assert hit_at([], 5) == 0.0
    with pytest.raises(ValueError):
        hit_at(ranks, 0)


def test_mrr_averages_reciprocal_ranks_with_misses_as_zero() -> None:
    ranks = [1, 2, None, 4]
    assert mrr(ranks) == pytest.approx((1 + 1 / 2 + 0 + 1 / 4) / 4)
    assert mrr(ranks, cutoff=2) == pytest.approx((1 + 1 / 2) / 4)
    assert mrr(ranks, cutoff=4) == pytest.approx(mrr(ranks))
    assert mrr([None, None]) == 0.0
    assert mrr([]) == 0.0
    with pytest.raises(ValueError):
        mrr(ranks, cutoff=0)


# ndcg_at


def test_ndcg_of_a_single_relevant_item_at_rank_two() -> None:
    assert ndcg_at([[False, True]]) == pytest.approx(1 / math.log2(3))


def test_ndcg_is_one_when_relevant_items_come_first() -> None:
    assert ndcg_at([[True]]) == pytest.approx(1.0)
    assert ndcg_at([[True, True, False, False]]) == pytest.approx(1.0)


def test_ndcg_with_two_relevant_items_out_of_order() -> None:
    # DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at([[False, True, False, True]]) == pytest.approx(expected)


def test_ndcg_scores_zero_without_relevant_items_and_averages_over_questions() -> None:
    assert ndcg_at([[False, False]]) == 0.0
    assert ndcg_at([[]]) == 0.0
    assert ndcg_at([]) == 0.0
    assert ndcg_at([[True], [False, True], [False]]) == pytest.approx(
        (1 + 1 / math.log2(3) + 0) / 3
    )


def test_ndcg_ignores_ranks_past_k_and_caps_the_ideal_at_k() -> None:
    assert ndcg_at([[False, False, True]], k=2) == 0.0
    # three relevant items but k=2: ideal is the two best slots; DCG@2 has one hit at rank 2
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at([[False, True, True, True]], k=2) == pytest.approx(expected)
    with pytest.raises(ValueError):
        ndcg_at([[True]], k=0)


# percentile


def test_percentile_interpolates_linearly_like_numpy() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert percentile(values, 0) == 15.0
    assert percentile(values, 100) == 50.0
    assert percentile(values, 50) == 35.0
    assert percentile(values, 40) == pytest.approx(29.0)  # numpy.percentile gives 29.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5), "input need not be sorted"
    assert percentile([7.0], 95) == 7.0


def test_percentile_rejects_empty_input_and_bad_q() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


# score_retrieval


def test_score_retrieval_on_three_questions() -> None:
    results = [
        [("a.pdf", [1]), ("a.pdf", [2])],  # hit at rank 1
        [("b.pdf", [9]), ("a.pdf", [5]), ("b.pdf", [3, 4])],  # hit at rank 3 only
        [("a.pdf", [8])],  # miss
    ]
    gold = [("a.pdf", 1), ("b.pdf", 4), ("a.pdf", 7)]
    scores = score_retrieval(results, gold, [0.010, 0.020, 0.030])
    assert scores == RetrievalScores(
        questions=3,
        hit1=pytest.approx(1 / 3),
        hit5=pytest.approx(2 / 3),
        hit10=pytest.approx(2 / 3),
        mrr=pytest.approx((1 + 1 / 3) / 3),
        ndcg10=pytest.approx((1 + 1 / 2) / 3),  # 1/log2(4) = 1/2
        p50_ms=pytest.approx(20.0),
        p95_ms=pytest.approx(29.0),
    )
    d = scores.to_dict()
    assert set(d) == {"questions", "hit1", "hit5", "hit10", "mrr", "ndcg10", "p50_ms", "p95_ms"}
    assert d["questions"] == 3
    json.dumps(d)


def test_score_retrieval_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError):
        score_retrieval([[("a.pdf", [1])]], [("a.pdf", 1)], [])
    with pytest.raises(ValueError):
        score_retrieval([], [], [])


# load_qa


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_qa_reads_answerable_and_unanswerable_lines_and_skips_blanks(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '{"question": "What is X?", "doc": "a.pdf", "page": 3, "answer_start": "X is"}',
        "",
        "   ",
        '{"question": "Who is Y?", "doc": null, "page": null}',
        '{"question": "Where is Z\u2028?", "doc": "b.pdf", "page": 1}',
    )
    assert load_qa(path) == [
        QAItem("What is X?", "a.pdf", 3, "X is"),
        QAItem("Who is Y?", None, None, None),
        QAItem("Where is Z\u2028?", "b.pdf", 1, None),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"question": "What is X?", "doc": "a.pdf", "page": 3', "invalid JSON"),
        ('["What is X?", "a.pdf", 3]', "not a JSON object"),
        ('{"doc": "a.pdf", "page": 3}', "question"),
        ('{"question": "  ", "doc": "a.pdf", "page": 3}', "question"),
        ('{"question": 7, "doc": "a.pdf", "page": 3}', "question"),
        ('{"question": "What is X?", "doc": "a.pdf", "page": 0}', "positive integer"),
        ('{"question": "What is X?", "doc": "a.pdf", "page": -2}', "positive integer"),
        ('{"question": "What is X?", "doc": "a.pdf", "page": "3"}', "positive integer"),
        ('{"question": "What is X?", "doc": "a.pdf", "page": 2.5}', "positive integer"),
        ('{"question": "What is X?", "doc": "a.pdf", "page": true}', "positive integer"),
        ('{"question": "What is X?", "doc": "a.pdf"}', "without 'page'"),
        ('{"question": "What is X?", "doc": "a.pdf", "page": null}', "without 'page'"),
        ('{"question": "What is X?", "doc": null, "page": 4}', "without 'doc'"),
        ('{"question": "What is X?", "doc": 5, "page": 4}', "'doc'"),
        (
            '{"question": "What is X?", "doc": "a.pdf", "page": 1, "answer_start": 3}',
            "answer_start",
        ),
    ],
)
def test_load_qa_names_file_line_and_reason_for_a_bad_line(
    tmp_path: Path, line: str, reason: str
) -> None:
    path = _write(tmp_path, '{"question": "fine", "doc": "a.pdf", "page": 1}', "", line)
    with pytest.raises(EvalDataError) as info:
        load_qa(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message
    assert reason in message
    assert isinstance(info.value, LocalLLMError)


def test_load_qa_on_a_missing_file_is_an_eval_data_error(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match=r"nope\.jsonl"):
        load_qa(tmp_path / "nope.jsonl")


def test_load_qa_reads_the_shared_dev_set() -> None:
    require(SHARED_EVAL.is_file(), f"the shared dev set {SHARED_EVAL} is missing")
    items = load_qa(SHARED_EVAL)
    assert len(items) == 71
    assert {item.doc for item in items} == {"debian-faq.en.pdf"}


def test_load_qa_reads_the_held_out_set() -> None:
    items = load_qa(BENCH_EVAL / "other_qa.jsonl")
    assert len(items) == 60
    per_doc: dict[str | None, int] = {}
    for item in items:
        per_doc[item.doc] = per_doc.get(item.doc, 0) + 1
        assert item.page is not None and item.answer_start
    assert per_doc == {
        "R-intro.pdf": 20,
        "developers-reference.pdf": 20,
        "reportlab-userguide.pdf": 20,
    }
    assert len({item.question for item in items}) == 60


def test_load_qa_reads_the_unanswerable_set() -> None:
    items = load_qa(BENCH_EVAL / "unanswerable.jsonl")
    assert len(items) == 20
    assert all(item.doc is None and item.page is None for item in items)
    assert len({item.question for item in items}) == 20
