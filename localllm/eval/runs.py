"""Eval runs over a live index: retrieval ranks, and grounded answers end to end."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from localllm.eval.metrics import QAItem, RetrievalScores, percentile, score_retrieval
from localllm.index.retrieve import Mode, Retriever
from localllm.llm.base import ChatModel, GenerationParams
from localllm.rag.answer import GroundedAnswer, GroundedChat, is_decline
from localllm.rag.attribute import echoed, marks_of
from localllm.rag.prompt import Source

Progress = Callable[[int, int], None]


def _noop(_done: int, _total: int) -> None:
    return None


def evaluate_retrieval(
    retriever: Retriever,
    items: Sequence[QAItem],
    collection: str,
    *,
    k: int = 10,
    mode: Mode = "hybrid",
    rerank: bool = True,
    progress: Progress = _noop,
) -> RetrievalScores:
    """Rank metrics over the questions that have a gold page (the others are skipped)."""
    answerable = [q for q in items if q.doc and q.page]
    results, gold, latencies = [], [], []
    for i, item in enumerate(answerable):
        found = retriever.search(item.question, collection, k=k, mode=mode, rerank=rerank)
        results.append([(h.chunk.name, h.chunk.pages) for h in found.hits])
        gold.append((str(item.doc), int(item.page or 0)))
        latencies.append(found.seconds)
        progress(i + 1, len(answerable))
    return score_retrieval(results, gold, latencies)


@dataclass
class AnswerScores:
    answerable: int
    unanswerable: int
    source_has_page: float  # a source given to the model holds the gold page
    cited_has_page: float  # a source the answer is attributed to (what the user sees) holds it
    answered: float  # answerable questions that were not declined
    declined_unanswerable: float  # questions with no answer in the corpus that were declined
    p50_s: float
    p95_s: float
    citation_precision: float = 0.0  # of the sources answerable answers cite, the share holding it
    model_cited_has_page: float = 0.0  # a source the model itself marked [n] holds the gold page
    supported_sentences: float = 0.0  # answer sentences (claims) a source supports
    echoed: float = 0.0  # answerable answers with no content of their own (a label, the question)
    quoted: float = 0.0  # answerable answers shown as a quote from the documents
    unsupported_declined: float = 0.0  # answerable answers declined for want of support

    def to_dict(self) -> dict[str, float | int]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def holds_page(source: Source, item: QAItem) -> bool:
    """Whether `source` is from the line's gold document and holds its gold page."""
    return source.file == item.doc and item.page in source.pages


def cites_gold_page(answer: GroundedAnswer, item: QAItem) -> bool:
    """A citation the user sees points to a source holding the gold page (`cited_has_page`)."""
    return any(holds_page(s, item) for s in answer.cited)


def model_marked(answer: GroundedAnswer) -> list[Source]:
    """The sources the model itself marked [n], before the answer's check replaced its marks."""
    marked = set(marks_of(answer.model_text))
    return [s for s in answer.sources if s.n in marked]


def _page_share(sources: Sequence[Source], item: QAItem) -> float | None:
    return sum(holds_page(s, item) for s in sources) / len(sources) if sources else None


def cited_precision(answer: GroundedAnswer, item: QAItem) -> float | None:
    """Of the sources the answer cites (what the user sees), the share holding the gold page;
    None when it cites none."""
    return _page_share(answer.cited, item)


def model_cited_precision(answer: GroundedAnswer, item: QAItem) -> float | None:
    """The same share for the sources the model itself marked [n]; None when it marked none."""
    return _page_share(model_marked(answer), item)


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def evaluate_answers(
    chat: GroundedChat,
    model: ChatModel,
    items: Sequence[QAItem],
    collection: str,
    params: GenerationParams,
    *,
    progress: Progress = _noop,
) -> tuple[AnswerScores, list[dict[str, object]]]:
    """Ask each question end to end; lines without a gold page are expected to be declined."""
    has_page, cites_page, answered, declined, seconds = [], [], [], [], []
    precision, model_cites, supported, echoes, quoted, unsupported = [], [], [], [], [], []
    details: list[dict[str, object]] = []
    for i, item in enumerate(items):
        started = time.perf_counter()
        answer = chat.prepare(model, item.question, collection, params)
        for _ in answer.stream(model, params):
            pass
        seconds.append(time.perf_counter() - started)
        refused = answer.declined or is_decline(answer.text)
        if item.doc and item.page:
            has_page.append(any(holds_page(s, item) for s in answer.sources))
            cites_page.append(cites_gold_page(answer, item))
            if (share := cited_precision(answer, item)) is not None:
                precision.append(share)
            model_cites.append(any(holds_page(s, item) for s in model_marked(answer)))
            claims = answer.attribution.claims
            supported += [c.supported for c in claims]
            echoes.append(
                not answer.declined and echoed(answer.model_text, answer.sources, item.question)
            )
            quoted.append(answer.outcome == "quoted")
            unsupported.append(answer.outcome == "unsupported")
            answered.append(not refused)
        else:
            declined.append(refused)
        details.append(
            {
                "question": item.question,
                "doc": item.doc,
                "page": item.page,
                "declined": refused,
                "answer": answer.text,
                "model_answer": answer.model_text,
                "outcome": answer.outcome,
                "sources": [(s.file, s.pages, s.cited) for s in answer.sources],
                "attribution": answer.attribution.to_list(),
                "top_similarity": answer.search.top_similarity if answer.search else None,
            }
        )
        progress(i + 1, len(items))
    scores = AnswerScores(
        answerable=len(has_page),
        unanswerable=len(declined),
        source_has_page=_share(has_page),
        cited_has_page=_share(cites_page),
        answered=_share(answered),
        declined_unanswerable=_share(declined),
        p50_s=percentile(seconds, 50) if seconds else 0.0,
        p95_s=percentile(seconds, 95) if seconds else 0.0,
        citation_precision=sum(precision) / len(precision) if precision else 0.0,
        model_cited_has_page=_share(model_cites),
        supported_sentences=_share(supported),
        echoed=_share(echoes),
        quoted=_share(quoted),
        unsupported_declined=_share(unsupported),
    )
    return scores, details
