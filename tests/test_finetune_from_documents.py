"""The "from my documents" dataset builder on real parts: the Debian FAQ ingested into Chroma with the
bundled embedder, and the bundled SmolLM2 writing the questions and answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localllm.errors import DatasetError
from localllm.finetune.data import load_jsonl
from localllm.finetune.from_documents import (
    EXAMPLE_REPLY,
    RejectedReply,
    pairs_from_documents,
    parse_pair,
    passages,
    write_pairs,
)
from localllm.index.store import DocumentStore
from localllm.llm.base import GenerationParams, Message
from localllm.llm.llamacpp import LlamaCppChatModel
from localllm.services import Services
from tests.rag_fixtures import FAQ_NAME, clean_settings, faq_path

PASSAGE = (
    "The apt-get clean command removes the downloaded package files from the cache in "
    "/var/cache/apt/archives, which frees disk space."
)

ALPHA = """# Tea garden

The Hillside tea garden grows green tea on terraces above the river. Picking starts in April,
when the first two leaves and the bud of each shoot are taken by hand. The leaves are steamed
within an hour of picking, rolled, and dried in warm air, so that they keep their green colour.
Visitors may walk the terraces on weekdays and taste the first harvest in the wooden house by the
gate, where the garden also sells its tea in small paper bags.
"""

BETA = """# Bicycle workshop

The workshop on Mill Street repairs bicycles of every kind. A puncture is mended while you wait,
usually within twenty minutes, and brake pads are replaced the same day. Wheels that are bent are
trued on a stand, spoke by spoke, until the rim runs straight again. The workshop lends a spare
bicycle to customers whose own bicycle must stay overnight, and it is closed on Sundays and public
holidays.
"""


@dataclass
class Docs:
    store: DocumentStore
    faq_pages: int


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Iterator[Docs]:
    """Collection "faq": the Debian FAQ; "two": two short notes; "empty": nothing."""
    root = tmp_path_factory.mktemp("from_documents")
    services = Services(clean_settings(root, shared_cache))
    try:
        ingestor = services.ingestor()
        report = ingestor.ingest([faq_path()], "faq")
        assert [r.status for r in report.results] == ["added"], report.to_dict()
        notes = []
        for name, text in (("alpha.md", ALPHA), ("beta.md", BETA)):
            (root / name).write_text(text, encoding="utf-8")
            notes.append(root / name)
        assert not ingestor.ingest(notes, "two").failed
        services.store.ensure_collection("empty")
        yield Docs(services.store, services.store.documents("faq")[0].pages)
    finally:
        services.close()


class Counting:
    """The real model, counting the answers asked of it."""

    def __init__(self, model: LlamaCppChatModel) -> None:
        self.model = model
        self.calls = 0

    def stream_chat(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]:
        self.calls += 1
        return self.model.stream_chat(messages, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


@pytest.fixture
def model(engine: LlamaCppChatModel) -> Counting:
    return Counting(engine)


# parsing


@pytest.mark.parametrize(
    "reply",
    [
        "Question: What does apt-get clean remove?\nAnswer: It removes the downloaded package files.",
        "\n**Q:** What does apt-get clean remove?\n**a:** It removes the downloaded package files.",
        "question : What does apt-get clean remove?\n\nANSWER: It removes the downloaded\npackage "
        "files.\nQuestion: Where is the cache?\nAnswer: In /var/cache/apt/archives.",
        "Question: What does apt-get clean remove?\nIt removes the downloaded package files.",
    ],
)
def test_a_pair_is_read_from_model_like_replies(reply: str) -> None:
    assert parse_pair(reply, PASSAGE) == (
        "What does apt-get clean remove?",
        "It removes the downloaded package files.",
    )


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("The passage is about apt.", "no question"),
        ("Question: What does apt-get clean remove?", "no answer"),
        ("Question: What does apt-get clean do\nIt removes files.", "no answer"),
        ("Question: What does apt-get clean remove?\nAnswer:", "shorter than 3 words"),
        ("Question: What does apt-get clean remove?\nAnswer: Files.", "shorter than 3 words"),
        ("Question: ?\nAnswer: It removes the downloaded package files.", "too short"),
        ("Question: " + "why " * 70 + "?\nAnswer: It frees disk space.", "longer than 60 words"),
        ("Q: What does apt-get clean remove?\nA: What does apt-get clean remove?", "repeats"),
        ("Q: What does apt-get clean remove?\nA: It is apt-get clean.", "repeats"),
        (EXAMPLE_REPLY, "copied the prompt's example"),
        (
            "Q: What does apt-get clean remove?\nA: Ubuntu 14.04 released by Canonical in London.",
            "not from the passage",
        ),
    ],
)
def test_unusable_replies_are_rejected_with_the_reason(reply: str, reason: str) -> None:
    with pytest.raises(RejectedReply, match=reason):
        parse_pair(reply, PASSAGE)


# choosing passages


def test_passages_are_long_and_spread_over_the_document(docs: Docs) -> None:
    chosen = passages(docs.store, "faq", max_pairs=6)
    assert len(chosen) == len({c.id for c in chosen}) == 6
    assert all(len(c.text.split()) >= 40 for c in chosen)
    pages = sorted(p for c in chosen for p in c.pages)
    assert pages[0] < docs.faq_pages / 3 and pages[-1] > docs.faq_pages * 2 / 3, pages
    assert passages(docs.store, "faq", max_pairs=6) == chosen  # deterministic
    both = passages(docs.store, "two", max_pairs=2)
    assert sorted(c.name for c in both) == ["alpha.md", "beta.md"]


# building


def test_pairs_from_the_faq_keep_their_source_and_round_trip(
    docs: Docs, model: Counting, tmp_path: Path
) -> None:
    seen: list[tuple[int, int, str]] = []
    result = pairs_from_documents(
        docs.store, model, "faq", max_pairs=6, progress=lambda *a: seen.append(a)
    )
    assert [(done, total) for done, total, _ in seen] == [(i, 6) for i in range(1, 7)]
    assert all(message.startswith(FAQ_NAME) for _, _, message in seen)
    assert result.chunks_used == model.calls == 6 and not result.cancelled
    assert len(result.examples) + len(result.skipped) == 6
    # the bundled 135M model makes a usable pair from about every second passage
    assert result.examples, result.skipped
    asked = {c.id: c for c in passages(docs.store, "faq", max_pairs=6)}
    assert len({p for c in asked.values() for p in c.pages}) > 1
    for example in result.examples:
        assert example.messages is not None
        question, answer = example.messages
        assert question["role"] == "user" and len(question["content"].split()) >= 3
        assert answer["role"] == "assistant" and len(answer["content"].split()) >= 3
        source = example.source or {}
        assert source["file"] == FAQ_NAME and source["collection"] == "faq"
        assert source["pages"] == asked[source["chunk"]].pages
        assert all(1 <= p <= docs.faq_pages for p in source["pages"])

    path = write_pairs(result, tmp_path / "faq.jsonl")
    loaded = load_jsonl(path)
    assert not loaded.problems
    assert [e.messages for e in loaded.examples] == [e.messages for e in result.examples]
    assert [e.source for e in loaded.examples] == [e.source for e in result.examples]


def test_cancel_keeps_what_was_made_and_asks_no_more(docs: Docs, model: Counting) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int, message: str) -> None:
        seen.append(done)
        cancel.set()

    result = pairs_from_documents(
        docs.store, model, "faq", max_pairs=4, progress=progress, cancel=cancel
    )
    assert result.cancelled and seen == [1]
    assert model.calls == result.chunks_used == 1
    assert len(result.examples) + len(result.skipped) == 1


def test_only_the_named_documents_are_asked_about(docs: Docs, model: Counting) -> None:
    seen: list[str] = []
    result = pairs_from_documents(
        docs.store,
        model,
        "two",
        documents=["beta.md"],
        max_pairs=3,
        progress=lambda done, total, message: seen.append(message),
    )
    assert result.chunks_used == model.calls == len(seen) >= 1
    assert all(message.startswith("beta.md") for message in seen), seen
    assert all((e.source or {}).get("file") == "beta.md" for e in result.examples)


@pytest.mark.parametrize(
    ("collection", "documents", "message"),
    [
        ("nope", None, r"no collection 'nope'.*collections: .*faq"),
        ("empty", None, r"collection 'empty' has no documents to build a dataset from"),
        ("two", ["gamma.md"], r"no document named gamma.md in collection 'two'.*alpha.md"),
    ],
)
def test_nothing_to_ask_about_is_a_clear_error_before_any_model_call(
    docs: Docs, model: Counting, collection: str, documents: list[str] | None, message: str
) -> None:
    with pytest.raises(DatasetError, match=message):
        pairs_from_documents(docs.store, model, collection, documents=documents)
    assert model.calls == 0
