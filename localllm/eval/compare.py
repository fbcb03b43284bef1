"""Fine-tune, retrieval, or both? Every chosen model answers the user's questions with and without
retrieval from a collection, and each (model, retrieval) pair is scored against the reference
answers.

With retrieval an answer is the Chat tab's grounded answer (ChatService, attribution included);
without, the Chat tab's plain chat. Scores per row: token F1 and ROUGE-L of the answer shown (its
[n] marks removed) against the reference; citation_precision, of the sources an answer cites, the
share holding the line's gold doc/page, averaged over the answers that cite any (`eval answers`'
citation_precision; null without retrieval or gold pages); gold_page_cited, the share of answers
citing a source that holds it (`eval answers`' cited_has_page); model_citation_precision, the
citation precision of the model's own [n] marks, before the check of each sentence replaced them;
declined, the share of answers that are the decline; perplexity of the reference answers given the
very prompt the model answered from (its sources, with retrieval); seconds per answer (the search,
the prompt and the answer; not the perplexity).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from localllm.errors import LocalLLMError
from localllm.eval.metrics import QAItem
from localllm.eval.runs import cited_precision, cites_gold_page, model_cited_precision
from localllm.eval.text_scores import rouge_l, token_f1
from localllm.llm.base import GenerationParams
from localllm.llm.catalog import adapter_base, resolve
from localllm.llm.manager import params_from_settings
from localllm.rag.answer import is_decline
from localllm.rag.attribute import without_marks

if TYPE_CHECKING:
    from localllm.chat.service import ChatAnswer
    from localllm.services import Services

Progress = Callable[[int, int, str], None]
MODES = (True, False)  # with retrieval, then without


class CompareError(LocalLLMError):
    """A comparison that can't start: no questions, or one without a reference answer."""


@dataclass
class CompareRow:
    model: str
    retrieval: bool
    f1: float
    rouge_l: float
    citation_precision: float | None
    declined: float
    perplexity: float | None
    seconds: float
    questions: int
    cited: float | None = None  # with retrieval: answers citing any source at all
    gold_page_cited: float | None = None  # with retrieval: answers citing the gold page
    model_citation_precision: float | None = None  # the model's own [n], before the check

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class Comparison:
    rows: list[CompareRow] = field(default_factory=list)
    questions: int = 0
    collection: str = ""
    cancelled: bool = False  # stopped early: only the (model, retrieval) pairs finished are rows
    answers: list[dict[str, Any]] = field(default_factory=list)  # one per question per row

    def to_dict(self, *, details: bool = False) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "rows": [r.to_dict() for r in self.rows],
            "questions": self.questions,
            "collection": self.collection,
            "cancelled": self.cancelled,
        }
        if details:
            shown["details"] = self.answers
        return shown


@dataclass
class _Tally:
    f1: list[float] = field(default_factory=list)
    rouge: list[float] = field(default_factory=list)
    declined: list[bool] = field(default_factory=list)
    gold_cited: list[bool] = field(default_factory=list)
    precision: list[float] = field(default_factory=list)
    model_precision: list[float] = field(default_factory=list)
    cited: list[bool] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    logprob: float = 0.0
    tokens: int = 0
    perplexity_known: bool = True

    def row(self, model: str, retrieval: bool) -> CompareRow:
        return CompareRow(
            model=model,
            retrieval=retrieval,
            f1=_mean(self.f1),
            rouge_l=_mean(self.rouge),
            citation_precision=_mean(self.precision) if self.precision else None,
            declined=_mean(self.declined),
            perplexity=(
                math.exp(min(-self.logprob / self.tokens, 50.0))
                if self.perplexity_known and self.tokens
                else None
            ),
            seconds=_mean(self.seconds),
            questions=len(self.f1),
            cited=_mean(self.cited) if retrieval else None,
            gold_page_cited=_mean(self.gold_cited) if self.gold_cited else None,
            model_citation_precision=_mean(self.model_precision) if self.model_precision else None,
        )


def _mean(values: Sequence[float | bool]) -> float:
    return sum(values) / len(values) if values else 0.0


def check_models(services: Services, models: Sequence[str]) -> list[str]:
    """The models' catalog names (none given: the default model), each checked loadable (an
    adapter's base present) before any work; raises the catalog's error naming the one that is
    not."""
    names = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    names = names or [services.settings.default_model]
    checked = []
    for name in names:
        info = resolve(services.settings, name)
        if info.kind == "adapter":
            adapter_base(services.settings, info)
        checked.append(info.name)
    return checked


def compare_models(
    services: Services,
    items: Sequence[QAItem],
    collection: str,
    models: Sequence[str],
    *,
    params: GenerationParams | None = None,
    modes: Sequence[bool] = MODES,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Comparison:
    """Each model x retrieval mode answers every question; one scored row per pair, in order.

    `progress(done, total, message)` follows each answer. When `cancel` is set the answer being
    written stops and the rows finished so far come back, `cancelled` true. Raises CompareError
    (or the catalog's, the store's error) before any answer when the inputs can't be used."""
    if not items:
        raise CompareError("the question set is empty")
    missing = [i for i, item in enumerate(items, start=1) if not (item.answer or "").strip()]
    if missing:
        raise CompareError(f"question {missing[0]} has no reference answer to score against")
    names = check_models(services, models)
    if any(modes):
        services.store.collection(collection)  # the store's clear error for an unknown one
    params = params or params_from_settings(services.settings, temperature=0.0, seed=0)
    result = Comparison(questions=len(items), collection=collection)
    total, done = len(names) * len(modes) * len(items), 0
    for name in names:
        for retrieval in modes:
            tally = _Tally()
            for item in items:
                if cancel is not None and cancel.is_set():
                    result.cancelled = True
                    return result
                where = collection if retrieval else None
                answered = _answer(services, item, name, where, params, cancel)
                if answered.stopped:
                    result.cancelled = True
                    return result
                detail = _score(answered, item, tally, retrieval)
                result.answers.append({"model": name, "retrieval": retrieval, **detail})
                done += 1
                if progress is not None:
                    mode = "with" if retrieval else "without"
                    progress(done, total, f"{name}, {mode} retrieval: {item.question[:60]}")
            result.rows.append(tally.row(name, retrieval))
    return result


@dataclass
class _Answered:
    answer: ChatAnswer
    seconds: float
    stopped: bool


def _answer(
    services: Services,
    item: QAItem,
    model: str,
    collection: str | None,
    params: GenerationParams,
    cancel: threading.Event | None = None,
) -> _Answered:
    from localllm.chat.service import ChatMessage, ChatRequest

    started = time.perf_counter()
    request = ChatRequest(
        [ChatMessage("user", item.question)], model=model, params=params, collection=collection
    )
    answer = services.chat.answer(request)
    stream = answer.stream()
    stopped = False
    try:
        for _ in stream:
            if cancel is not None and cancel.is_set():
                stopped = True
                break
    finally:
        stream.close()
    return _Answered(answer, time.perf_counter() - started, stopped)


def _score(
    answered: _Answered,
    item: QAItem,
    tally: _Tally,
    retrieval: bool,
) -> dict[str, Any]:
    answer, reference = answered.answer, str(item.answer)
    shown = answer.text
    plain = without_marks(shown)
    f1, rouge = token_f1(plain, reference), rouge_l(plain, reference)
    declined = answer.declined if answer.grounded is not None else is_decline(shown)
    tally.f1.append(f1)
    tally.rouge.append(rouge)
    tally.declined.append(declined)
    tally.seconds.append(answered.seconds)
    grounded = answer.grounded
    gold_cited, precision, model_precision = None, None, None
    if retrieval and grounded is not None:
        tally.cited.append(bool(grounded.cited))
        if item.doc and item.page:
            gold_cited = cites_gold_page(grounded, item)
            tally.gold_cited.append(gold_cited)
            if (precision := cited_precision(grounded, item)) is not None:
                tally.precision.append(precision)
            if (model_precision := model_cited_precision(grounded, item)) is not None:
                tally.model_precision.append(model_precision)
    perplexity = _reference_logprob(answer, reference, tally)
    return {
        "question": item.question,
        "reference": reference,
        "answer": shown,
        "f1": round(f1, 4),
        "rouge_l": round(rouge, 4),
        "declined": declined,
        "cites_gold_page": gold_cited,
        "citation_precision": None if precision is None else round(precision, 4),
        "model_citation_precision": None if model_precision is None else round(model_precision, 4),
        "perplexity": perplexity,
        "seconds": round(answered.seconds, 3),
    }


def _reference_logprob(answer: ChatAnswer, reference: str, tally: _Tally) -> float | None:
    """The reference's perplexity given the answer's prompt, added to `tally`; None (and the row's
    perplexity null) for a model that can't score text, e.g. one behind an OpenAI server."""
    scorer = getattr(answer.model, "reply_logprobs", None)
    if scorer is None:
        tally.perplexity_known = False
        return None
    try:
        logprobs: list[float] = scorer(answer.messages, reference)
    except LocalLLMError:  # the prompt and reference overflow the window: left out
        return None
    if not logprobs:
        return None
    tally.logprob += sum(logprobs)
    tally.tokens += len(logprobs)
    return round(math.exp(min(-sum(logprobs) / len(logprobs), 50.0)), 4)
