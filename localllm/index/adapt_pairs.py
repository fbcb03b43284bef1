"""(question, passage) pairs for adapting the embedder: split into training and a held-out part by
passage, so no held-out question, nor any other question about a held-out passage, is trained on.

Questions come from a generator: the chat model's (localllm/adapt_embedder.py, which may import the
chat engine) or `sentence_questions` here, which needs no model.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from localllm.documents.chunk import search_text
from localllm.errors import LocalLLMError
from localllm.index.adapt_score import Question
from localllm.index.chroma_records import StoredChunk
from localllm.index.store import DocumentStore

# (store, collection, how many passages at most, progress(done, total), should_stop) -> questions,
# each naming the passage it was written from
Generator = Callable[
    [DocumentStore, str, int, Callable[[int, int], None], Callable[[], bool]], list[Question]
]

MIN_WORDS = 40  # as finetune/from_documents.py: shorter passages rarely hold a question
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


class AdaptError(LocalLLMError):
    """Adapting the embedder can't start or go on: the message says why."""


@dataclass
class Pairs:
    train: list[Question]
    held_out: list[Question]


def usable(chunk: StoredChunk) -> bool:
    words = chunk.text.split()
    return len(words) >= MIN_WORDS and sum(w.isalpha() for w in words) >= len(words) / 2


def spread(chunks: Sequence[StoredChunk], limit: int) -> list[StoredChunk]:
    """Up to `limit` usable passages, evenly spaced through the collection."""
    kept = [c for c in chunks if usable(c)]
    if len(kept) <= limit:
        return kept
    return [kept[(i * len(kept)) // limit] for i in range(limit)]


def question_for(chunk: StoredChunk, text: str) -> Question:
    return Question(text, chunk.id, chunk.name, chunk.pages[0] if chunk.pages else 1)


def split(questions: Sequence[Question], held_out: float, seed: int = 0) -> Pairs:
    """By passage, by a hash of its id against the share: a passage is held out or not whatever
    else is asked about. At least one passage on each side when there are two or more; a
    training question that is also a held-out one (from another passage) is dropped."""

    def draw(chunk_id: str) -> float:
        digest = hashlib.sha256(f"{seed}:{chunk_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    passages = sorted({q.chunk_id for q in questions}, key=draw)
    kept_out = {p for p in passages if draw(p) < held_out}
    if len(passages) >= 2 and not kept_out:
        kept_out = {passages[0]}
    if len(passages) >= 2 and len(kept_out) == len(passages):
        kept_out.discard(passages[-1])
    held = [q for q in questions if q.chunk_id in kept_out]
    asked = {_plain(q.question) for q in held}  # the same question may come from two passages
    train = [q for q in questions if q.chunk_id not in kept_out and _plain(q.question) not in asked]
    return Pairs(train=train, held_out=held)


def _plain(question: str) -> str:
    return " ".join(re.findall(r"\w+", question.lower()))


def write_training(pairs: Sequence[Question], chunks: dict[str, StoredChunk], path: Path) -> Path:
    """The training pairs as the trainer reads them: the question and the passage as embedded."""
    lines = [
        json.dumps(
            {
                "question": q.question,
                "passage": search_text(chunks[q.chunk_id].text, chunks[q.chunk_id].section),
                "chunk_id": q.chunk_id,
            },
            ensure_ascii=False,
        )
        for q in pairs
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_questions(questions: Sequence[Question], path: Path) -> Path:
    path.write_text(
        "".join(json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in questions),
        encoding="utf-8",
    )
    return path


def read_questions(path: Path) -> list[Question]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [Question(r["question"], r["chunk_id"], r["file"], int(r["page"])) for r in rows]


def collection_passages(store: DocumentStore, collection: str) -> list[StoredChunk]:
    return [c for d in store.documents(collection) for c in store.chunks_of(collection, d.doc_id)]


def sentence_questions(
    store: DocumentStore,
    collection: str,
    limit: int,
    progress: Callable[[int, int], None],
    should_stop: Callable[[], bool],
) -> list[Question]:
    """No model: each passage's longest sentence (of 8 to 40 words) stands for a question about
    it, as in the inverse cloze task (Lee et al., 2019). Instant, but such a "question" shares
    its words with its passage, so it is easier to find than a real one."""
    chunks = spread(collection_passages(store, collection), limit)
    out = []
    for done, chunk in enumerate(chunks, start=1):
        if should_stop():
            break
        sentences = [s.strip() for s in _SENTENCE.split(" ".join(chunk.text.split()))]
        fitting = [s for s in sentences if 8 <= len(s.split()) <= 40]
        if fitting:
            out.append(question_for(chunk, max(fitting, key=lambda s: len(s.split()))))
        progress(done, len(chunks))
    return out
