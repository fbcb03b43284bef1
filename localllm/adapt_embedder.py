"""Adapting a collection's embedder, as every face asks for it: which questions to train on (the
chat model's, from finetune/from_documents.py, or plain sentences), a job in a thread for the UI,
and the keep / discard decision. Here, not in index/, because the question writer is the chat
model, which index/ never imports; the work itself is index/adapt.py.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Literal

from localllm.index.adapt import (
    AdaptCancelled,
    AdaptError,
    AdaptOptions,
    adapt,
    discard,
    keep,
    pending,
)
from localllm.index.adapt_pairs import (
    Generator,
    collection_passages,
    question_for,
    sentence_questions,
    spread,
)
from localllm.index.adapt_run import Adaptation
from localllm.index.adapt_score import Question
from localllm.index.store import DocumentStore
from localllm.llm.base import ChatModel, GenerationParams, Message
from localllm.services import Services

GENERATORS = ("model", "sentences")
QUESTION_INSTRUCTION = (
    "Write one question that a reader might ask and that this passage answers. "
    "Reply with the question only, in this format:\nQuestion: ..."
)
MAX_QUESTION_TOKENS = 48
MAX_QUESTION_WORDS = 40
Choice = Literal["auto", "keep", "discard", "later"]
CHOICES: tuple[Choice, ...] = ("auto", "keep", "discard", "later")
STAGES = {
    "questions": "Writing questions",
    "before": "Measuring the current embedder",
    "train": "Training",
    "build": "Building the accelerated embedder",
    "embed": "Re-embedding the collection",
    "after": "Measuring the adapted embedder",
}


def model_questions(model: ChatModel) -> Generator:
    """The chat model writes one question per passage, shown the worked example that
    finetune/from_documents.py shows it, but asked for the question only: an embedder needs no
    answer, and a question alone is three times quicker and rejected less often (measured on
    the Debian FAQ: 6.4 s and 3 usable pairs out of 10 passages for question and answer)."""
    from localllm.finetune.from_documents import EXAMPLE_PASSAGE, EXAMPLE_QUESTION, SYSTEM

    params = GenerationParams(temperature=0.0, seed=0, max_tokens=MAX_QUESTION_TOKENS, stop=("\n",))

    def messages(passage: str) -> list[Message]:
        return [
            Message(role="system", content=SYSTEM),
            Message(role="user", content=f"{QUESTION_INSTRUCTION}\n\nPassage:\n{EXAMPLE_PASSAGE}"),
            Message(role="assistant", content=f"Question: {EXAMPLE_QUESTION}"),
            Message(role="user", content=f"{QUESTION_INSTRUCTION}\n\nPassage:\n{passage}"),
        ]

    def generate(
        store: DocumentStore,
        collection: str,
        limit: int,
        progress: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> list[Question]:
        chunks = spread(collection_passages(store, collection), limit)
        room = model.answer_budget(params) - model.prompt_tokens(messages(""))
        out = []
        for done, chunk in enumerate(chunks, start=1):
            if should_stop():
                break
            passage = chunk.text
            while passage and model.count_tokens(passage) > room:
                passage = passage[: int(len(passage) * 0.9)]
            reply = "".join(model.stream_chat(messages(passage), params))
            question = reply.strip().removeprefix("Question:").strip().strip("*_ ")
            if usable_question(question, EXAMPLE_QUESTION):
                out.append(question_for(chunk, question))
            progress(done, len(chunks))
        return out

    return generate


def usable_question(question: str, example: str) -> bool:
    words = len(question.split())
    return question.endswith("?") and 3 <= words <= MAX_QUESTION_WORDS and question != example


def generator_for(services: Services, name: str) -> Generator:
    if name == "model":
        return model_questions(services.models.loaded or services.models.get())
    if name == "sentences":
        return sentence_questions
    raise AdaptError(f"unknown question writer {name!r}; choose one of {', '.join(GENERATORS)}")


def run(
    services: Services,
    collection: str,
    *,
    questions: str = "model",
    options: AdaptOptions | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Adaptation:
    """Adapt and measure; the result waits for `decide`."""
    return adapt(
        services.store,
        services.embedder,
        collection,
        generator_for(services, questions),
        generator=questions,
        options=options,
        progress=progress,
        should_stop=should_stop,
    )


def decide(services: Services, collection: str, choice: Choice = "auto") -> Adaptation:
    """Keep or discard the waiting adaptation; "auto" keeps it unless held-out hit@1 got worse,
    "later" leaves it waiting."""
    if choice not in CHOICES:
        raise AdaptError(f"choose one of {', '.join(CHOICES)}, not {choice!r}")
    record = pending(services.store, collection)
    if record is None:
        raise AdaptError(f"collection {collection!r} has no adapted embedder waiting")
    if choice == "later":
        return record
    if choice == "keep" or (choice == "auto" and record.better):
        if any(not job.done for job in services.jobs.values()):
            raise AdaptError("documents are being indexed: keep the adapted embedder when done")
        return keep(services.store, services.embedder, collection)
    return discard(services.store, services.embedder, collection)


def waiting(services: Services, collection: str) -> Adaptation | None:
    return pending(services.store, collection)


def progress_line(stage: str, done: int, total: int) -> str:
    name = STAGES.get(stage, stage)
    return f"{name}: {done} of {total}" if total > 1 else f"{name}…"


class AdaptJob:
    """`run` in a background thread, so a UI can show progress and cancel it."""

    def __init__(
        self, services: Services, collection: str, options: AdaptOptions, questions: str
    ) -> None:
        self.id = uuid.uuid4().hex
        self.stage, self.done_count, self.total = "questions", 0, 0
        self.result: Adaptation | None = None
        self.error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(services, collection, options, questions), daemon=True
        )

    def _run(
        self, services: Services, collection: str, options: AdaptOptions, questions: str
    ) -> None:
        try:
            self.result = run(
                services,
                collection,
                questions=questions,
                options=options,
                progress=self._on_progress,
                should_stop=self._cancel.is_set,
            )
        except BaseException as e:  # surfaced to whoever follows the job
            self.error = e

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done_count, self.total = stage, done, total

    @property
    def line(self) -> str:
        return progress_line(self.stage, self.done_count, self.total)

    def start(self) -> AdaptJob:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set() or isinstance(self.error, AdaptCancelled)

    @property
    def done(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.done
