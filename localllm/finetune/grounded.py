"""Grounded fine-tuning examples (RAFT: Zhang et al., 2024): a collection becomes training examples in
exactly the prompt the app sends at answer time.

For each question the chat model writes from a passage (from_documents), the app's own GroundedChat
retrieves and numbers the sources and builds the messages (rules, sources in the app's order and
labels, the question). The target cites [n] of the source that holds the answer. In a share of the
examples the sources holding the answer are taken out, the rest (the distractors, as ranked) renumbered,
and the target is the app's decline text: the model learns to say so rather than make one up.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from localllm.errors import DatasetError
from localllm.finetune.data import Example
from localllm.finetune.from_documents import DocumentPairs, content_words, pairs_from_documents
from localllm.llm.base import ChatModel, GenerationParams, Message
from localllm.rag.prompt import REFUSAL, Source

if TYPE_CHECKING:
    from localllm.rag.answer import GroundedChat
    from localllm.services import Services

# Of the examples, given only distractors and taught to decline. 0.2 taught the bundled model to
# decline answerable questions too; 0.1 did not (bench/README.md, grounded_tuning).
DECLINE_SHARE = 0.1
HOLDS = 0.8  # share of the answer's content words a passage has when it holds the answer too
LENGTH_STEP = 64  # the suggested max tokens per example is rounded up to this

Progress = Callable[[int, int, str], None]


@dataclass
class GroundedSet:
    """What the builder made, and what it could not use (with the reason)."""

    examples: list[Example] = field(default_factory=list)
    pairs: int = 0  # question/answer pairs written by the model
    declines: int = 0  # examples with only distractors, whose target is the decline
    missed: int = 0  # questions whose own passage the retriever did not rank among the sources
    skipped: list[str] = field(default_factory=list)
    longest: int = 0  # tokens of the longest example, prompt and answer
    cancelled: bool = False

    @property
    def max_length(self) -> int:
        """Max tokens per example that trains on every example whole (the default cuts them)."""
        return -(-max(self.longest, 1) // LENGTH_STEP) * LENGTH_STEP

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": len(self.examples),
            "pairs": self.pairs,
            "declines": self.declines,
            "missed": self.missed,
            "skipped": self.skipped,
            "max_length": self.max_length,
            "cancelled": self.cancelled,
        }


@dataclass
class _Planned:
    pair: Example
    question: str
    answer: str
    messages: list[Message]  # as GroundedChat.prepare built them
    sources: list[Source]  # as numbered there
    holders: list[int]  # the numbers of the sources that hold the answer
    golden: int | None  # the number of the passage the pair was written from, if retrieved


def cite(answer: str, n: int) -> str:
    """The answer with its source's number: "It is done daily [2]."."""
    text = answer.rstrip()
    if text and text[-1] in ".!?":
        return f"{text[:-1]} [{n}]{text[-1]}"
    return f"{text} [{n}]"


def holds_answer(text: str, answer: str) -> bool:
    said = content_words(answer)
    return bool(said) and len(said & content_words(text)) >= HOLDS * len(said)


def grounded_from_documents(
    services: Services,
    model: ChatModel,
    collection: str,
    *,
    documents: Sequence[str] | None = None,
    max_pairs: int = 50,
    decline_share: float = DECLINE_SHARE,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> GroundedSet:
    """Grounded examples from up to `max_pairs` passages of `collection`, with the app's retriever
    and prompt settings (Settings: rag_sources, rag_source_order, ...). `model` writes the
    questions and is the one whose window the prompts are fitted to. Raises DatasetError, before
    any model call, when there is nothing to ask about."""
    from localllm.llm.manager import params_from_settings

    _check_share(decline_share)
    pairs = pairs_from_documents(
        services.store,
        model,
        collection,
        documents=documents,
        max_pairs=max_pairs,
        progress=progress,
        cancel=cancel,
    )
    # after a Stop the pairs written so far still get their sources (a search each: quick)
    return grounded_examples(
        services.grounded(model),
        model,
        pairs,
        collection,
        params_from_settings(services.settings),
        decline_share=decline_share,
        seed=seed,
        progress=progress,
    )


def grounded_examples(
    chat: GroundedChat,
    model: ChatModel,
    pairs: DocumentPairs,
    collection: str,
    params: GenerationParams,
    *,
    decline_share: float = DECLINE_SHARE,
    seed: int = 0,
    progress: Progress | None = None,
) -> GroundedSet:
    """The pairs as grounded chat examples: system (the rules), user (sources and question) and
    the assistant's target, each prompt as `chat` would send it to `model` with `params`."""
    _check_share(decline_share)
    result = GroundedSet(
        pairs=len(pairs.examples), skipped=list(pairs.skipped), cancelled=pairs.cancelled
    )
    planned: list[_Planned] = []
    for done, pair in enumerate(pairs.examples, start=1):
        plan = _plan(chat, model, pair, collection, params)
        if plan is None:
            result.skipped.append(f"{_where(pair)}: the app declines this question unasked")
        else:
            planned.append(plan)
            result.missed += plan.golden is None
        if progress is not None:
            progress(done, len(pairs.examples), f"sources for: {_question(pair)}")
    declining = _choose_declines(planned, decline_share, seed)
    for i, plan in enumerate(planned):
        example = _example(chat, model, plan, params, decline=i in declining)
        result.declines += i in declining
        result.examples.append(example)
        result.longest = max(result.longest, model.prompt_tokens(example.messages or []))
    return result


def _check_share(share: float) -> None:
    if not 0 <= share <= 1:
        raise DatasetError(f"the share of declining examples is between 0 and 1, not {share}")


def _where(pair: Example) -> str:
    source = pair.source or {}
    pages = source.get("pages") or []
    return f"{source.get('file', 'a passage')}" + (f" p. {pages[0]}" if pages else "")


def _question(pair: Example) -> str:
    return next(m["content"] for m in pair.messages or [] if m["role"] == "user")


def _plan(
    chat: GroundedChat,
    model: ChatModel,
    pair: Example,
    collection: str,
    params: GenerationParams,
) -> _Planned | None:
    """The app's prompt for the pair's question, and which of its sources hold the answer; None
    when the app would decline without asking the model (nothing to learn there)."""
    question = _question(pair)
    answer = (pair.messages or [])[-1]["content"]
    prepared = chat.prepare(model, question, collection, params)
    if prepared.declined or not prepared.sources:
        return None
    chunk = (pair.source or {}).get("chunk")
    golden = next((s.n for s in prepared.sources if chunk and s.chunk_id == chunk), None)
    holders = [s.n for s in prepared.sources if s.n == golden or holds_answer(s.text, answer)]
    return _Planned(pair, question, answer, prepared.messages, prepared.sources, holders, golden)


def _choose_declines(planned: Sequence[_Planned], share: float, seed: int) -> set[int]:
    """Which examples get only distractors: those whose sources hold no answer anyway, and then
    as many more, chosen at random (`seed`), as make `share` of them (at least one of two or more)."""
    wanted = round(share * len(planned))
    if share > 0 and len(planned) >= 2:
        wanted = max(1, wanted)
    forced = {i for i, p in enumerate(planned) if not p.holders}
    open_ = [i for i, p in enumerate(planned) if p.holders and len(p.holders) < len(p.sources)]
    extra = max(0, min(wanted - len(forced), len(open_)))
    return forced | set(random.Random(seed).sample(open_, extra))


def _example(
    chat: GroundedChat,
    model: ChatModel,
    plan: _Planned,
    params: GenerationParams,
    *,
    decline: bool,
) -> Example:
    if decline:
        distractors = [s for s in plan.sources if s.n not in plan.holders]
        sources = [dataclasses.replace(s, n=n) for n, s in enumerate(distractors, start=1)]
        messages, sources, _ = chat.prompt(model, plan.question, sources, params)
        target, cited = REFUSAL, None
    else:
        messages, sources = plan.messages, plan.sources
        cited = plan.golden if plan.golden is not None else plan.holders[0]
        target = cite(plan.answer, cited)
    provenance = {
        **(plan.pair.source or {}),
        "grounded": {
            "question": plan.question,
            "answer": plan.answer,  # as the model wrote it from the passage
            "cites": cited,
            "golden_retrieved": plan.golden is not None,
            "sources": [
                {"n": s.n, "file": s.file, "pages": s.pages, "chunk": s.chunk_id} for s in sources
            ],
        },
    }
    assistant = Message(role="assistant", content=target)
    return Example(messages=[*messages, assistant], source=provenance)
