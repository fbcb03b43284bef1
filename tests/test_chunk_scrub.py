from __future__ import annotations

from localllm.documents.chunk import chunk_document
from localllm.documents.model import Element, ParsedDocument
from localllm.documents.scrub import scrub


def words(text: str) -> int:
    return len(text.split())


def doc(elements: list[Element]) -> ParsedDocument:
    return ParsedDocument(
        path="/x/d.pdf", name="d.pdf", sha256="ab" * 32, pages=3, elements=elements
    )


def test_chunks_respect_the_budget_sections_and_pages() -> None:
    elements = [
        Element("Introduction", 1, kind="title"),
        Element("alpha " * 30, 1, section="Introduction", bbox=(0, 0, 10, 10)),
        Element("beta " * 30, 2, section="Introduction", bbox=(0, 0, 10, 10)),
        Element("gamma " * 30, 2, section="Introduction"),
        Element("Methods", 2, kind="title"),
        Element("delta " * 10, 3, section="Methods"),
    ]
    chunks = chunk_document(doc(elements), words, max_tokens=70)
    assert all(words(c.text) <= 70 for c in chunks)
    assert [c.section for c in chunks] == ["Introduction", "Introduction", "Methods"]
    assert chunks[0].text.startswith("Introduction") and chunks[0].pages == [1, 2]
    assert chunks[0].boxes == [(1, (0, 0, 10, 10)), (2, (0, 0, 10, 10))]
    assert chunks[2].text.startswith("Methods") and chunks[2].pages == [2, 3]
    assert [c.ordinal for c in chunks] == [0, 1, 2]
    # Stable ids: the same document chunked again gets the same ids.
    assert [c.id for c in chunk_document(doc(elements), words, max_tokens=70)] == [
        c.id for c in chunks
    ]
    assert len({c.id for c in chunks}) == len(chunks)


def test_a_paragraph_longer_than_the_budget_is_split_at_sentences() -> None:
    text = " ".join(f"Sentence number {i} says something short." for i in range(40))
    chunks = chunk_document(doc([Element(text, 1)]), words, max_tokens=50)
    assert len(chunks) > 1 and all(words(c.text) <= 50 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks)
    assert " ".join(c.text for c in chunks) == text
    unbroken = "x" * 5000
    pieces = chunk_document(doc([Element(unbroken, 1)]), lambda t: len(t) // 10, max_tokens=100)
    assert "".join(c.text for c in pieces) == unbroken and all(len(c.text) <= 1000 for c in pieces)


def test_scrub_replaces_pii_and_leaves_ordinary_numbers() -> None:
    text = (
        "Mail jane.doe@example.com, call +44 20 7946 0958 or (555) 123-4567. "
        "IBAN GB82 WEST 1234 5698 7654 32, card 4111 1111 1111 1111, SSN 123-45-6789, "
        "NI AB 12 34 56 C. ISBN 978-3-16-148410-0, pages 120-145, years 2015 2016 2017, "
        "version 1.2.3, order 4111 1111 1111 1112."
    )
    clean, counts = scrub(text)
    for secret in (
        "jane.doe",
        "7946",
        "123-4567",
        "GB82",
        "4111 1111 1111 1111",
        "123-45-6789",
        "AB 12 34",
    ):
        assert secret not in clean
    assert counts == {"EMAIL": 1, "PHONE": 2, "IBAN": 1, "CARD": 1, "NATIONAL_ID": 2}
    for kept in ("978-3-16-148410-0", "120-145", "2015 2016 2017", "1.2.3", "4111 1111 1111 1112"):
        assert kept in clean, kept
