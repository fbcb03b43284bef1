"""Fine-tuning examples "from my documents": the chat model writes a question and its answer for each
of a spread of indexed passages, and every example keeps the file and pages it came from.

Small models drift from a format they are only told about, so the prompt shows one worked exchange
first; replies are then parsed leniently and checked, and the ones that can't be used are reported.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from localllm.errors import DatasetError
from localllm.finetune.data import Example, write_jsonl
from localllm.llm.base import ChatModel, GenerationParams, Message

if TYPE_CHECKING:
    from localllm.index.chroma_records import StoredChunk
    from localllm.index.store import DocumentStore

MIN_WORDS = 40  # shorter passages rarely hold a fact worth a question
MAX_TOKENS = 128  # a question and a short answer; longer replies are cut there
MAX_QUESTION_WORDS = 60
MIN_ANSWER_WORDS = 3
MIN_GROUNDING = 0.5  # share of the answer's content words that must occur in the passage

INSTRUCTION = (
    "Write one question that a reader might ask and that this passage answers, then the answer, "
    "using only the passage. Use exactly this format:\nQuestion: ...\nAnswer: ..."
)
EXAMPLE_PASSAGE = (
    "Debian packages are installed with dpkg. The apt tool downloads packages from the archive "
    "and resolves their dependencies before calling dpkg to install them."
)
EXAMPLE_QUESTION = "What does apt do before calling dpkg?"
EXAMPLE_ANSWER = "It downloads the packages from the archive and resolves their dependencies."
EXAMPLE_REPLY = f"Question: {EXAMPLE_QUESTION}\nAnswer: {EXAMPLE_ANSWER}"
SYSTEM = "You write quiz questions about passages of documents."

_LABEL = re.compile(r"^[\s*#>_-]*(question|q|answer|a)\s*[*_]*\s*[:\uff1a][*_]*", re.I | re.M)
_WORD = re.compile(r"[^\W_]+")
FILLER = {"a", "an", "is", "it", "no", "the", "this", "that", "yes"}


@dataclass
class DocumentPairs:
    """What the builder made: the examples, how many passages it asked about, what it dropped."""

    examples: list[Example] = field(default_factory=list)
    chunks_used: int = 0
    skipped: list[str] = field(default_factory=list)
    cancelled: bool = False


class RejectedReply(ValueError):
    """A reply that is not a usable question and answer; the message is the reason."""


def pairs_from_documents(
    store: DocumentStore,
    model: ChatModel,
    collection: str,
    *,
    documents: Sequence[str] | None = None,
    max_pairs: int = 50,
    params: GenerationParams | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: threading.Event | None = None,
) -> DocumentPairs:
    """Question/answer chat examples written by `model` from up to `max_pairs` passages of
    `collection` (or of its `documents`, by name or id), spread over documents and pages.

    `progress(done, total, message)` follows each passage. When `cancel` is set the examples made
    so far are returned, with `cancelled` true. Raises DatasetError, before any model call, when
    there is nothing to ask about."""
    if max_pairs < 1:
        raise DatasetError(f"ask for at least one pair, not {max_pairs}")
    params = params or GenerationParams(temperature=0.0, seed=0)
    params = dataclasses.replace(params, max_tokens=min(params.max_tokens, MAX_TOKENS))
    chunks = passages(store, collection, documents=documents, max_pairs=max_pairs)
    result = DocumentPairs()
    for done, chunk in enumerate(chunks, start=1):
        if cancel is not None and cancel.is_set():
            result.cancelled = True
            break
        reply = "".join(model.stream_chat(_prompt(model, chunk.text, params), params))
        result.chunks_used += 1
        where = _where(chunk)
        try:
            if model.count_tokens(reply) >= params.max_tokens:
                raise RejectedReply(f"the reply was cut at {params.max_tokens} tokens")
            question, answer = parse_pair(reply, chunk.text)
        except RejectedReply as rejected:
            message = f"{where}: {rejected}"
            result.skipped.append(message)
        else:
            message = f"{where}: {question}"
            user, assistant = (
                Message(role="user", content=question),
                Message(role="assistant", content=answer),
            )
            source = {"collection": collection, "file": chunk.name, "pages": chunk.pages}
            result.examples.append(
                Example(messages=[user, assistant], source={**source, "chunk": chunk.id})
            )
        if progress is not None:
            progress(done, len(chunks), message)
    return result


def write_pairs(pairs: DocumentPairs, path: str | Path) -> Path:
    """The examples as JSONL (all or nothing), readable back with data.load_jsonl."""
    if not pairs.examples:
        raise DatasetError("no question/answer pair was made, so there is nothing to write")
    return write_jsonl(pairs.examples, path)


def passages(
    store: DocumentStore,
    collection: str,
    *,
    documents: Sequence[str] | None = None,
    max_pairs: int = 50,
) -> list[StoredChunk]:
    """The chunks to ask about: long enough, and spread out (see `_spread`). Raises DatasetError
    for an unknown or empty collection, an unknown document, or no chunk long enough."""
    known = [c.name for c in store.collections()]
    if collection not in known:
        names = ", ".join(known) or "none yet"
        raise DatasetError(
            f"there is no collection {collection!r} to build a dataset from (collections: {names})"
        )
    records = store.documents(collection)
    if not records:
        raise DatasetError(f"collection {collection!r} has no documents to build a dataset from")
    if documents is not None:
        wanted = set(documents)
        missing = wanted - {r.name for r in records} - {r.doc_id for r in records}
        if missing or not wanted:
            present = ", ".join(r.name for r in records)
            raise DatasetError(
                f"no document named {', '.join(sorted(missing)) or '(none given)'} in "
                f"collection {collection!r} (documents: {present})"
            )
        records = [r for r in records if r.name in wanted or r.doc_id in wanted]
    found = [[c for c in store.chunks_of(collection, r.doc_id) if _usable(c.text)] for r in records]
    if not any(found):
        raise DatasetError(
            f"collection {collection!r} has no passage of {MIN_WORDS} words or more to ask about"
        )
    return _spread(found, max_pairs)


def _usable(text: str) -> bool:
    words = text.split()
    # a table of contents is mostly dot leaders and page numbers
    return len(words) >= MIN_WORDS and sum(w.isalpha() for w in words) >= len(words) / 2


def _spread(per_document: Sequence[Sequence[StoredChunk]], max_pairs: int) -> list[StoredChunk]:
    """Up to `max_pairs` passages: shared out among the documents in turn, evenly spaced within
    each, and interleaved, so that any prefix (a cancelled run) is spread too."""
    quota = [0] * len(per_document)
    left = max(0, min(max_pairs, sum(len(d) for d in per_document)))
    while left:
        for i, doc in enumerate(per_document):
            if left and quota[i] < len(doc):
                quota[i] += 1
                left -= 1
    picks = [
        [doc[(j * len(doc)) // q + len(doc) // (2 * q)] for j in range(q)] if q else []
        for doc, q in zip(per_document, quota, strict=True)
    ]
    return [p[j] for j in range(max(quota, default=0)) for p in picks if j < len(p)]


def _prompt(model: ChatModel, passage: str, params: GenerationParams) -> list[Message]:
    def messages(text: str) -> list[Message]:
        return [
            Message(role="system", content=SYSTEM),
            Message(role="user", content=f"{INSTRUCTION}\n\nPassage:\n{EXAMPLE_PASSAGE}"),
            Message(role="assistant", content=EXAMPLE_REPLY),
            Message(role="user", content=f"{INSTRUCTION}\n\nPassage:\n{text}"),
        ]

    room = model.answer_budget(params) - model.prompt_tokens(messages(""))
    while passage and model.count_tokens(passage) > room:
        passage = passage[: int(len(passage) * 0.9)]
    return messages(passage)


def parse_pair(reply: str, passage: str | None = None) -> tuple[str, str]:
    """(question, answer) from a reply like "Question: ...\\nAnswer: ..." (or "Q:"/"A:", any case);
    raises RejectedReply with the reason it is no usable pair, checked against `passage` if given."""
    parts: dict[str, str] = {}
    labels = list(_LABEL.finditer(reply))
    ends = [label.start() for label in labels[1:]] + [len(reply)]
    for label, end in zip(labels, ends, strict=False):  # no label: nothing to read
        kind = label.group(1)[0].lower()
        if kind == "q" and "a" in parts:
            break  # a second pair begins
        parts.setdefault(kind, reply[label.end() : end])
    if "q" not in parts:
        raise RejectedReply("the model's reply had no question")
    if "a" not in parts:  # "Question: ...?" then an unlabelled answer on the next lines
        first, _, rest = parts["q"].strip().partition("\n")
        if not first.rstrip().endswith("?") or not rest.strip():
            raise RejectedReply("the model's reply had no answer")
        parts.update(q=first, a=rest)
    question, answer = (" ".join(parts[k].split()).strip("*_ ") for k in "qa")
    if len(question.split()) < 3:
        raise RejectedReply("the question is empty or too short")
    if len(question.split()) > MAX_QUESTION_WORDS:
        raise RejectedReply(f"the question is longer than {MAX_QUESTION_WORDS} words")
    if question.lower() == EXAMPLE_QUESTION.lower():
        raise RejectedReply("the model copied the prompt's example")
    if len(answer.split()) < MIN_ANSWER_WORDS:
        raise RejectedReply(f"the answer is shorter than {MIN_ANSWER_WORDS} words")
    if content_words(answer, 1) <= content_words(question, 1) | FILLER:
        raise RejectedReply("the answer repeats the question")
    said = content_words(answer)
    if passage is not None and len(said & content_words(passage)) < MIN_GROUNDING * len(said):
        raise RejectedReply("the answer is mostly not from the passage")
    return question, answer


def content_words(text: str, shortest: int = 4) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) >= shortest}


def _where(chunk: StoredChunk) -> str:
    pages = chunk.pages
    if not pages:
        return chunk.name
    if len(pages) == 1:
        return f"{chunk.name} p. {pages[0]}"
    return f"{chunk.name} pp. {pages[0]}-{pages[-1]}"
