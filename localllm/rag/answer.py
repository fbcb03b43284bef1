"""Grounded answers: retrieve, build the prompt, stream the model's answer, note what it cited."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from localllm.documents.chunk import search_text
from localllm.index.catalog import DocumentRecord
from localllm.index.lexical import QUESTION_WORDS, term_coverage, tokenize
from localllm.index.pages import printed_pages
from localllm.index.retrieve import Retriever, SearchHit, SearchResult
from localllm.llm.base import ChatModel, GenerationParams, GenerationStats, Message
from localllm.rag.attribute import (
    LEAD_THRESHOLD,
    QUOTE_THRESHOLD,
    SUPPORT_THRESHOLD,
    Attribution,
    Embed,
    attribute,
    cite_sentences,
    echoed,
    quote_candidate,
    quote_text,
)
from localllm.rag.prompt import (
    GROUNDED_RULES,
    REFUSAL,
    Labels,
    Order,
    Source,
    Turn,
    build_messages,
    standalone_query,
)
from localllm.rag.unknown import general_words, never_mentioned

MIN_TERM_COVERAGE = 2 / 3
UNKNOWN_SHARE = 0.2  # see GroundedChat.unknown; above 1: off
_DECLINES = re.compile(
    r"\b(can ?not|can't|could ?n[o']t|unable to|does ?n[o']t|do not|don't) "
    r"(find|locate|see|answer|contain|mention|say|provide)|not (in|mentioned in|found in) "
    r"(the|your) (documents|sources)|no (information|mention)",
    re.IGNORECASE,
)


def is_decline(answer: str) -> bool:
    """Whether an answer says the documents don't hold the answer."""
    return REFUSAL.lower() in answer.lower() or bool(_DECLINES.search(answer))


def remembered(embed: Embed) -> Embed:
    """`embed` that embeds each text once: attribution and the quote compare the same sentences."""
    known: dict[str, np.ndarray] = {}

    def embed_once(texts: list[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in known))
        if new:
            known.update(zip(new, embed(new), strict=True))
        return np.stack([known[t] for t in texts]) if texts else embed(texts)

    return embed_once


def decide(
    *,
    model_declined: bool,
    supported: set[int],
    echoed: bool,
    quote: tuple[float, int] | None,
    quote_threshold: float = QUOTE_THRESHOLD,
    lead_threshold: float = LEAD_THRESHOLD,
) -> str:
    """What a grounded answer shows, from what attribution found.

    answered: the model's text, its supported sentences cited (`supported`: the sources they cite);
    quoted: the passage that answers the question (`quote`: how well, its source number), when the
    model's text has nothing supported or only echoes a label, or when the passage answers the
    question so closely (`lead_threshold`, an FAQ's own heading) that a small model answering from
    another source, or declining, is the one to doubt; declined: the model said the documents don't
    hold it; unsupported: nothing supported and nothing to quote, shown as a decline.
    """
    leads = quote is not None and quote[0] >= lead_threshold
    if model_declined:
        return "quoted" if leads else "declined"
    if supported and not echoed:
        return "quoted" if leads and quote is not None and quote[1] not in supported else "answered"
    if quote is not None and quote[0] >= quote_threshold:
        return "quoted"
    return "unsupported"


def as_source(n: int, hit: SearchHit) -> Source:
    c = hit.chunk
    return Source(
        n=n,
        file=c.name,
        pages=list(c.pages),
        section=c.section,
        text=c.text,
        score=hit.score,
        chunk_id=c.id,
        doc_id=c.doc_id,
        boxes=list(c.boxes),
    )


def with_printed_pages(sources: Sequence[Source], records: Sequence[DocumentRecord]) -> None:
    """Each source's pages given the numbers printed on them, where the PDF's labels differ."""
    pages_of: dict[str, set[int]] = {}
    for s in sources:
        pages_of.setdefault(s.doc_id, set()).update(s.pages)
    printed = printed_pages(records, pages_of)
    for s in sources:
        labels = printed.get(s.doc_id, {})
        s.printed = {page: labels[page] for page in s.pages if page in labels}


@dataclass
class GroundedAnswer:
    question: str
    query: str
    sources: list[Source]  # as numbered in the prompt
    messages: list[Message]
    declined: bool  # nothing in the documents came close: the model is not asked
    search: SearchResult | None = None
    dropped_turns: int = 0
    text: str = ""  # the answer shown: the model's, its citations checked (see `outcome`)
    seconds_to_first_token: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    embed: Embed | None = field(default=None, repr=False)
    support_threshold: float = SUPPORT_THRESHOLD
    quote_threshold: float = QUOTE_THRESHOLD
    lead_threshold: float = LEAD_THRESHOLD
    unknown_words: list[str] = field(default_factory=list)  # why it was declined, if that is why
    attribution: Attribution = field(default_factory=Attribution)
    model_text: str = ""  # what the model wrote
    # answered | declined (by the search, or the model) | quoted (the model gave nothing the
    # documents support, so a passage that answers is quoted) | unsupported (shown as a decline)
    outcome: str = "answered"

    def stream(
        self, model: ChatModel, params: GenerationParams, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        """Yield the answer piece by piece; afterwards `text` and each source's `cited` are set
        (and `stats`, when given, as the model's stream_chat fills it)."""
        started = time.perf_counter()
        if self.declined:
            self.text = self.model_text = self.refusal
            self.outcome = "declined"
            self.seconds_to_first_token = 0.0
            yield self.text
            return
        pieces: list[str] = []
        try:
            for piece in model.stream_chat(self.messages, params, stats):
                if not pieces:
                    self.seconds_to_first_token = time.perf_counter() - started
                pieces.append(piece)
                yield piece
        finally:
            self.check("".join(pieces))

    def check(self, text: str) -> None:
        """Tie each sentence of the model's `text` to the source that supports it, and set what
        is shown: the text with checked citations, a quote from the documents, or a decline."""
        started = time.perf_counter()
        self.model_text = self.text = text
        for source in self.sources:
            source.cited, source.spans = False, []
        declined = is_decline(text)
        embed = remembered(self.embed) if self.embed is not None else None
        if not declined:
            self.attribution = attribute(
                text, self.sources, embed, threshold=self.support_threshold
            )
        candidate = quote_candidate(self.question, self.sources, embed)
        self.outcome = decide(
            model_declined=declined,
            supported=self.attribution.cited_sources(),
            echoed=not declined and echoed(text, self.sources, self.question),
            quote=(candidate[0], candidate[1].n) if candidate else None,
            quote_threshold=self.quote_threshold,
            lead_threshold=self.lead_threshold,
        )
        if self.outcome == "answered":
            self.text = cite_sentences(text, self.attribution)
            spans = self.attribution.spans()
            for source in self.sources:
                source.cited, source.spans = source.n in spans, spans.get(source.n, [])
        elif self.outcome == "quoted" and candidate is not None:
            _, source, span, passage = candidate
            source.cited, source.spans = True, [span]
            self.text = quote_text(source, passage)
        elif self.outcome == "unsupported":
            self.text = REFUSAL
        self.timings["attribution"] = time.perf_counter() - started

    @property
    def refusal(self) -> str:
        if not self.unknown_words:
            return REFUSAL
        named = ", ".join(f"“{w}”" for w in self.unknown_words)
        return f"{REFUSAL} (They never mention {named}.)"

    @property
    def cited(self) -> list[Source]:
        return [s for s in self.sources if s.cited]

    @property
    def turn(self) -> Turn:
        """This exchange as history for the next question (sources kept for KV-cache reuse)."""
        return Turn(self.question, self.text, self.sources)

    def to_dict(self) -> dict[str, object]:
        return {
            "answer": self.text,
            "sources": [s.to_dict() for s in self.sources],
            "declined": self.declined or is_decline(self.text),
            "query": self.query,
            "outcome": self.outcome,
            "model_answer": self.model_text,
            "attribution": self.attribution.to_list(),
            "unknown_words": self.unknown_words,
        }


class GroundedChat:
    """Answers questions from one collection's documents."""

    def __init__(
        self,
        retriever: Retriever,
        *,
        sources: int = 5,
        min_similarity: float = 0.4,
        support_threshold: float = SUPPORT_THRESHOLD,
        quote_threshold: float = QUOTE_THRESHOLD,
        lead_threshold: float = LEAD_THRESHOLD,
        unknown_share: float = UNKNOWN_SHARE,
        unknown_names: bool = True,
        rules: str = GROUNDED_RULES,
        labels: Labels = "file",
        order: Order = "best_last",
    ) -> None:
        self.retriever = retriever
        self.sources = sources
        self.min_similarity = min_similarity
        self.support_threshold = support_threshold
        self.quote_threshold = quote_threshold
        self.lead_threshold = lead_threshold
        self.unknown_share = unknown_share
        self.unknown_names = unknown_names
        self.rules = rules
        self.labels: Labels = labels
        self.order: Order = order

    def unknown(self, query: str, collection: str) -> list[str]:
        """The query's words no passage holds, when they decide it (see rag/unknown.py)."""
        if self.unknown_share > 1.0 and not self.unknown_names:
            return []
        words = self.retriever.store.sync_lexical(collection).unknown_words(query)
        return never_mentioned(
            query,
            words,
            len(set(tokenize([query])[0]) - QUESTION_WORDS),
            share=self.unknown_share,
            names=self.unknown_names,
            general=general_words(self.retriever.embedder.model_path),
        )

    def _too_far(self, query: str, found: SearchResult) -> bool:
        """Nothing close by meaning, and no passage holding most of the question's words.

        The words rescue questions MiniLM scores low though a passage plainly matches (technical
        text, code); the meaning alone declines most out-of-corpus questions without the model.
        """
        if found.top_similarity is None or found.top_similarity >= self.min_similarity:
            return False
        texts = [search_text(h.chunk.text, h.chunk.section) for h in found.hits]
        return term_coverage(query, texts) < MIN_TERM_COVERAGE

    def prompt(
        self,
        model: ChatModel,
        question: str,
        sources: Sequence[Source],
        params: GenerationParams,
        history: Sequence[Turn] = (),
    ) -> tuple[list[Message], list[Source], int]:
        """The messages sent for `question` with these `sources`, fitted to the model's window:
        (messages, the sources kept, earlier turns dropped); also what grounded training learns."""
        return build_messages(
            question,
            sources,
            history,
            model.prompt_tokens,
            model.answer_budget(params),
            self.rules,
            self.labels,
            self.order,
        )

    def prepare(
        self,
        model: ChatModel,
        question: str,
        collection: str,
        params: GenerationParams,
        *,
        history: Sequence[Turn] = (),
        documents: Sequence[str] | None = None,
    ) -> GroundedAnswer:
        query = standalone_query(question, [t.question for t in history])
        t = time.perf_counter()
        found = self.retriever.search(query, collection, k=self.sources, documents=documents)
        timings = {"search": time.perf_counter() - t}
        sources = [as_source(n, hit) for n, hit in enumerate(found.hits, start=1)]
        with_printed_pages(sources, self.retriever.store.documents(collection))
        unknown = self.unknown(query, collection) if sources else []
        declined = not sources or bool(unknown) or self._too_far(query, found)
        t = time.perf_counter()
        messages, kept, dropped = self.prompt(
            model, question, [] if declined else sources, params, history
        )
        timings["prompt"] = time.perf_counter() - t
        return GroundedAnswer(
            question=question,
            query=query,
            sources=kept,
            messages=messages,
            declined=declined,
            search=found,
            dropped_turns=dropped,
            timings=timings,
            embed=self.retriever.embedder.embed,
            support_threshold=self.support_threshold,
            quote_threshold=self.quote_threshold,
            lead_threshold=self.lead_threshold,
            unknown_words=unknown,
        )
