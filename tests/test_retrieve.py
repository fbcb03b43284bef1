"""Hybrid retrieval on real parts: the Debian FAQ parsed, embedded and stored in Chroma on disk,
BM25 kept in sync with the store through deletes, replacements and restarts."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localllm.index.catalog import chroma_name_for
from localllm.index.embed import Embedder
from localllm.index.ingest import Ingestor
from localllm.index.retrieve import RRF_K, Retriever, fuse
from localllm.index.store import DocumentStore, StoreError
from tests.rag_fixtures import (
    HOLD_PAGE,
    HOLD_QUESTION,
    KNOWN,
    clean_settings,
    faq_path,
    squash,
)


@dataclass
class Faq:
    folder: Path  # a docs_store holding the FAQ in collection "faq"
    embedder: Embedder
    doc_id: str


@pytest.fixture(scope="module")
def faq(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Iterator[Faq]:
    path = faq_path()
    settings = clean_settings(tmp_path_factory.mktemp("retrieve"), shared_cache)
    embedder = Embedder(
        settings.embedder_path,
        backend=settings.embed_backend,
        cache_dir=settings.cache_dir / "embedder",
    )
    store = DocumentStore(settings.docs_store)
    try:
        report = Ingestor(store, embedder, chunk_tokens=settings.chunk_tokens).ingest([path], "faq")
        assert [r.status for r in report.results] == ["added"], report.to_dict()
        doc_id = store.documents("faq")[0].doc_id
    finally:
        store.close()
    yield Faq(settings.docs_store, embedder, doc_id)
    embedder.close()


@pytest.fixture
def store(faq: Faq) -> Iterator[DocumentStore]:
    opened = DocumentStore(faq.folder)
    yield opened
    opened.close()


@pytest.fixture
def retriever(store: DocumentStore, faq: Faq) -> Retriever:
    return Retriever(store, faq.embedder)


def ingest(
    retriever: Retriever, collection: str, folder: Path, files: dict[str, str]
) -> dict[str, str]:
    """Write `files` (name -> markdown) into `folder`, ingest them; returns name -> doc id."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
        paths.append(folder / name)
    report = Ingestor(retriever.store, retriever.embedder).ingest(paths, collection)
    assert not report.failed, report.to_dict()
    return {d.name: d.doc_id for d in retriever.store.documents(collection)}


ALPHA_V1 = """# Alpha notes

The zanzibar marmalade protocol governs how breakfast deliveries reach the ward.

Deliveries arrive before seven and are signed for at the front desk.
"""
ALPHA_V2 = """# Alpha notes

The quixotic turbine manifest replaced the earlier delivery rules in March.

Deliveries arrive before eight and are signed for at the loading bay.
"""
BETA = """# Beta notes

The orbital cucumber treaty was signed by three greenhouse cooperatives in spring.
"""


def lexical_names(retriever: Retriever, query: str, collection: str) -> list[str]:
    return [h.file for h in retriever.search(query, collection, mode="lexical").hits]


# hybrid, lexical and vector search over the FAQ


def test_hybrid_search_finds_the_page_that_answers(retriever: Retriever) -> None:
    found = retriever.search(HOLD_QUESTION, "faq", k=10)
    pages = [h.chunk.pages for h in found.hits]
    assert any(HOLD_PAGE in p for p in pages[:3]), pages
    assert len(found.hits) == 10
    assert all(h.file == "debian-faq.en.pdf" for h in found.hits)
    assert found.top_similarity is not None and found.top_similarity > 0.5


@pytest.mark.parametrize(("sentence", "page"), KNOWN)
def test_a_distinctive_phrase_puts_its_page_first_in_lexical_search(
    retriever: Retriever, sentence: str, page: int
) -> None:
    first = retriever.search(sentence, "faq", k=5, mode="lexical").hits[0]
    assert page in first.chunk.pages, first.chunk.pages
    assert squash(sentence) in squash(first.chunk.text)


def test_each_mode_sets_its_own_scores(retriever: Retriever) -> None:
    by_mode = {
        mode: retriever.search(HOLD_QUESTION, "faq", k=5, mode=mode)
        for mode in ("vector", "lexical", "hybrid")
    }
    for mode, found in by_mode.items():
        assert len(found.hits) == 5, mode
        assert HOLD_PAGE in found.hits[0].chunk.pages, (mode, [h.chunk.pages for h in found.hits])
        scores = [h.score for h in found.hits]
        assert scores == sorted(scores, reverse=True), (mode, scores)

    vector = by_mode["vector"]
    for hit in vector.hits:
        assert hit.bm25 is None and hit.similarity is not None
        assert 0.0 < hit.similarity <= 1.0 and hit.score == hit.similarity
    assert vector.top_similarity == pytest.approx(vector.hits[0].similarity)

    lexical = by_mode["lexical"]
    for hit in lexical.hits:
        assert hit.similarity is None and hit.bm25 is not None
        assert hit.bm25 > 0.0 and hit.score == hit.bm25
    assert lexical.top_similarity is None

    hybrid = by_mode["hybrid"]
    assert all(0.0 < h.score <= 1.0 for h in hybrid.hits)
    first = hybrid.hits[0]
    assert first.similarity is not None and first.bm25 is not None, "found by both lists"
    assert hybrid.top_similarity == pytest.approx(vector.top_similarity)
    for hit in hybrid.hits:
        d = hit.to_dict()
        assert d["file"] == "debian-faq.en.pdf" and d["pages"] == hit.chunk.pages
        assert d["text"] == hit.chunk.text and d["chunk_id"] == hit.chunk.id


def test_bad_mode_and_empty_query(retriever: Retriever) -> None:
    with pytest.raises(ValueError, match="unknown search mode 'fuzzy'"):
        retriever.search(HOLD_QUESTION, "faq", mode="fuzzy")  # type: ignore[arg-type]
    assert retriever.search("   ", "faq").hits == []
    with pytest.raises(StoreError, match="no collection named 'nope'"):
        retriever.search(HOLD_QUESTION, "nope")


# fusion


def test_fuse_by_hand() -> None:
    scores = fuse([["a", "b"], ["a", "c"]])
    assert scores["a"] == pytest.approx(1.0), "first in both lists"
    # b and c: 1/62 each, scaled by the best possible 2/61
    assert scores["b"] == pytest.approx((1 / 62) / (2 / 61))
    assert scores["c"] == pytest.approx(scores["b"])

    crossed = fuse([["x", "y", "z"], ["y", "x"]], k=RRF_K)
    assert crossed["x"] == pytest.approx(crossed["y"]) == pytest.approx((1 / 61 + 1 / 62) * 61 / 2)
    assert crossed["z"] == pytest.approx((1 / 63) * 61 / 2)
    assert fuse([["p", "q"]], k=1) == pytest.approx({"p": 1.0, "q": (1 / 3) / (1 / 2)})
    assert fuse([[], []]) == {}


# filters


def test_documents_filter_keeps_to_the_named_document(retriever: Retriever, tmp_path: Path) -> None:
    ids = ingest(retriever, "filter", tmp_path, {"alpha.md": ALPHA_V1, "beta.md": BETA})
    query = "zanzibar marmalade deliveries and the orbital cucumber treaty"
    for mode in ("vector", "lexical", "hybrid"):
        everything = retriever.search(query, "filter", mode=mode)  # type: ignore[arg-type]
        assert {h.file for h in everything.hits} == {"alpha.md", "beta.md"}, mode
        only = retriever.search(query, "filter", mode=mode, documents=["beta.md"])  # type: ignore[arg-type]
        assert only.hits, mode
        assert {h.file for h in only.hits} == {"beta.md"}, mode
        assert {h.chunk.doc_id for h in only.hits} == {ids["beta.md"]}, mode
    by_id = retriever.search(query, "filter", documents=[ids["alpha.md"]])
    assert {h.file for h in by_id.hits} == {"alpha.md"}
    with pytest.raises(StoreError, match=r"no document named nope\.md in collection 'filter'"):
        retriever.search(query, "filter", documents=["beta.md", "nope.md"])


# BM25 kept in sync with the store


def test_deleted_document_leaves_no_lexical_hits(retriever: Retriever, tmp_path: Path) -> None:
    ids = ingest(retriever, "sync-delete", tmp_path, {"alpha.md": ALPHA_V1, "beta.md": BETA})
    assert lexical_names(retriever, "zanzibar marmalade", "sync-delete") == ["alpha.md"]
    retriever.store.delete_document("sync-delete", "alpha.md")
    assert retriever.store.lexical_query("sync-delete", "zanzibar marmalade") == []
    hybrid = retriever.search("zanzibar marmalade protocol", "sync-delete")
    assert ids["alpha.md"] not in {h.chunk.doc_id for h in hybrid.hits}
    assert lexical_names(retriever, "orbital cucumber", "sync-delete") == ["beta.md"]


def test_changed_document_replaces_its_terms(retriever: Retriever, tmp_path: Path) -> None:
    first = ingest(retriever, "sync-replace", tmp_path, {"alpha.md": ALPHA_V1, "beta.md": BETA})
    assert lexical_names(retriever, "zanzibar marmalade", "sync-replace") == ["alpha.md"]
    second = ingest(retriever, "sync-replace", tmp_path, {"alpha.md": ALPHA_V2})
    assert second["alpha.md"] != first["alpha.md"] and second["beta.md"] == first["beta.md"]
    assert retriever.store.lexical_query("sync-replace", "zanzibar marmalade") == []
    hits = retriever.store.lexical_query("sync-replace", "quixotic turbine manifest")
    assert hits and {h.doc_id for h in hits} == {second["alpha.md"]}
    hybrid = retriever.search("zanzibar marmalade protocol", "sync-replace")
    assert first["alpha.md"] not in {h.chunk.doc_id for h in hybrid.hits}
    assert all("zanzibar" not in h.chunk.text for h in hybrid.hits)


def test_recreated_collection_has_no_stale_hits(retriever: Retriever, tmp_path: Path) -> None:
    ingest(retriever, "sync-recreate", tmp_path / "one", {"alpha.md": ALPHA_V1})
    assert lexical_names(retriever, "zanzibar marmalade", "sync-recreate") == ["alpha.md"]
    retriever.store.delete_collection("sync-recreate")
    with pytest.raises(StoreError, match="no collection named 'sync-recreate'"):
        retriever.search("zanzibar marmalade", "sync-recreate", mode="lexical")
    ingest(retriever, "sync-recreate", tmp_path / "two", {"beta.md": BETA})
    assert retriever.store.lexical_query("sync-recreate", "zanzibar marmalade") == []
    assert lexical_names(retriever, "orbital cucumber", "sync-recreate") == ["beta.md"]
    hybrid = retriever.search("zanzibar marmalade protocol", "sync-recreate")
    assert {h.file for h in hybrid.hits} == {"beta.md"}


def test_same_document_chunked_anew_is_indexed_anew(retriever: Retriever, tmp_path: Path) -> None:
    # `docs rm` then `ingest` of the same file after the chunk size (or the chunker) changed:
    # the same document id comes back with other chunks, and no search ran in between.
    path = tmp_path / "notes.md"
    paragraphs = (
        f"Paragraph {i} explains how the zanzibar marmalade protocol treats item {i}, "
        "in enough words to make a passage of its own."
        for i in range(12)
    )
    path.write_text("# Notes\n\n" + "\n\n".join(paragraphs), encoding="utf-8")
    store = retriever.store
    Ingestor(store, retriever.embedder, chunk_tokens=200).ingest([path], "sync-rechunk")
    first = store.lexical_query("sync-rechunk", "zanzibar marmalade", 100)
    store.delete_document("sync-rechunk", "notes.md")
    Ingestor(store, retriever.embedder, chunk_tokens=40).ingest([path], "sync-rechunk")
    doc_id = store.documents("sync-rechunk")[0].doc_id
    ids = {c.id for c in store.chunks_of("sync-rechunk", doc_id)}
    assert len(ids) > len(first), "chunked finer the second time"
    hits = store.lexical_query("sync-rechunk", "zanzibar marmalade", 100)
    assert {h.chunk_id for h in hits} == ids


def test_lexical_index_persists_and_is_rebuilt_from_chroma(faq: Faq) -> None:
    queries = [sentence for sentence, _ in KNOWN] + [HOLD_QUESTION]

    def results() -> tuple[dict[str, list[tuple[str, float]]], list[str]]:
        store = DocumentStore(faq.folder)
        try:
            lexical = {
                q: [(h.chunk_id, round(h.score, 4)) for h in store.lexical_query("faq", q, 20)]
                for q in queries
            }
            hybrid = Retriever(store, faq.embedder).search(HOLD_QUESTION, "faq", k=10)
            return lexical, [h.chunk.id for h in hybrid.hits]
        finally:
            store.close()

    before = results()
    assert all(before[0].values())
    folder = faq.folder / "bm25" / chroma_name_for("faq")
    meta = folder / "index" / "meta.json"
    built = meta.stat().st_mtime_ns

    assert results() == before, "the same results after a restart"
    assert meta.stat().st_mtime_ns == built, "loaded from disk, not rebuilt"

    shutil.rmtree(faq.folder / "bm25")
    assert results() == before, "rebuilt from the chunks in Chroma"
    assert meta.is_file()
    assert (folder / "docs" / f"{faq.doc_id}.json").is_file(), "tokens backfilled"


def test_contents_indexes_and_bare_headings_are_navigation() -> None:
    from localllm.index.navigation import is_navigation

    contents = (
        "3.1.8 From an administrator's point of view, which distribution needs more attention? 9\n"
        "3.1.9 What happens when a new release is made? . . . . . . . . . . . . . . . 10\n"
        "3.1.10 I have a working Desktop with Debian installed. How do I know which\n"
        "distribution I am running? . . . . . . . . . . . . . . . . . . . . . . . . . 10"
    )
    index = (
        "abline . . . . . . . . . . . 71\nace . . . . . . . . . . . . 67\nadd1 . . . . . . . . 62"
    )
    for text in (
        contents,
        index,
        "Chapter 16",
        "User Guide Chapter 3 Fonts and encodings",
        "Page 47",
    ):
        assert is_navigation(text), text
    for text in (
        "Deliveries arrive before seven and are signed for at the front desk.",
        "> X <- cbind(arg_1, arg_2, arg_3, ...)\nthe arguments to cbind() must be vectors.",
        "Plan\nPremium 2023 450 EUR per year.\nBasic 2023 120 EUR per year.",
        "What is a Virtual Package?",
    ):
        assert not is_navigation(text), text


def test_a_running_header_of_its_own_section_is_navigation() -> None:
    """Longer than a bare heading, but only the section's heading with a page's running words."""
    from localllm.index.navigation import is_navigation

    section = "Chapter 5 PLATYPUS - Page Layout and Typography Using Scripts"
    header = "User Guide Chapter 5 PLATYPUS - Page Layout and Typography Using Scripts\nPage 65"
    assert is_navigation(header, section)
    assert is_navigation("Chapter 5 PLATYPUS - Page Layout and Typography\nUsing Scripts", section)
    assert not is_navigation(header), "without its section it is not known to be a heading"
    text = "The language has available a conditional construction of the form"
    assert not is_navigation(text, "9.2.1 Conditional execution: if statements")
    answer = 'Platypus stands for "Page Layout and Typography Using Scripts".'
    assert not is_navigation(answer, section)


def test_a_question_its_contents_page_lists_finds_the_answer_not_the_contents(
    retriever: Retriever,
) -> None:
    from localllm.index.navigation import is_navigation

    question = "What is this FAQ?"  # its contents line holds every word of it
    shown = retriever.search(question, "faq", k=5).hits
    assert shown and not any(is_navigation(h.chunk.text) for h in shown)
    assert any(h.page == 9 and "frequently asked questions" in squash(h.chunk.text) for h in shown)
    everything = retriever.search(question, "faq", k=5, navigation=True).hits
    assert any(is_navigation(h.chunk.text) for h in everything), "the contents is still stored"
