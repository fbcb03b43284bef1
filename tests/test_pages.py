"""A cited PDF page drawn as an image, with the cited passage highlighted where its text is."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pypdfium2
import pytest
from PIL import Image, ImageChops

from localllm.chat.sources import pages_text
from localllm.documents.layout import rotate_box
from localllm.documents.model import BBox, Element, ParsedDocument
from localllm.documents.parse import parse_file
from localllm.index.catalog import DocumentRecord
from localllm.index.pages import PAD, PageRenderError, printed_label, printed_labels, render_page
from localllm.rag.answer import with_printed_pages
from localllm.rag.prompt import Source
from tests.corpus import corpus_file
from tests.labelled_pdf import labelled_pdf

FAQ = "debian-faq.en.pdf"
PAGE = 13
SENTENCE = "No new functionality is added to the stable release."
WIDTH = 900
FAQ_WIDTH, FAQ_HEIGHT = 595.28, 841.89  # its pages' size in points


@pytest.fixture(scope="module")
def faq() -> ParsedDocument:
    return parse_file(corpus_file(FAQ))


def flat(text: str) -> str:
    return " ".join(text.split())


def element_on(doc: ParsedDocument, page: int, sentence: str) -> Element:
    [element] = [e for e in doc.elements if e.page == page and sentence in flat(e.text)]
    assert element.bbox is not None
    return element


def shown_width(path: Path, page: int) -> float:
    """The page's width in points as PDFium shows it (its crop box, turned)."""
    pdf = pypdfium2.PdfDocument(path)
    try:
        return pdf[page - 1].get_width()
    finally:
        pdf.close()


def pixels(path: Path, page: int, box: BBox, width: int = WIDTH) -> tuple[int, int, int, int]:
    """The box in the pixels of a render `width` wide."""
    scale = width / shown_width(path, page)
    x0, y0, x1, y1 = (round(v * scale) for v in box)
    return x0, y0, x1, y1


def inner(rect: tuple[int, int, int, int], margin: int = 4) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = rect
    return x0 + margin, y0 + margin, x1 - margin, y1 - margin


def rgb(image: Image.Image, rect: tuple[int, int, int, int]) -> np.ndarray:
    return np.asarray(image.crop(rect), dtype=np.float64).reshape(-1, 3)


def yellowness(image: Image.Image, rect: tuple[int, int, int, int]) -> float:
    """How much red and green outweigh blue in the region, on average."""
    r, g, b = rgb(image, rect).T
    return float(np.mean((r + g) / 2 - b))


def ink(image: Image.Image, rect: tuple[int, int, int, int]) -> float:
    """The share of dark pixels in the region."""
    return float(np.mean(rgb(image, rect).mean(axis=1) < 128))


def likeness(image: Image.Image, other: Image.Image) -> float:
    """The correlation of two images' grey levels, `image` scaled to `other`'s size first."""
    a = np.asarray(image.convert("L").resize(other.size), dtype=np.float64).ravel()
    b = np.asarray(other.convert("L"), dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_the_cited_passage_is_tinted_yellow_and_nothing_else_changes(faq: ParsedDocument) -> None:
    path = corpus_file(FAQ)
    box = element_on(faq, PAGE, SENTENCE).bbox
    assert box is not None
    plain = render_page(path, PAGE, width=WIDTH)
    marked = render_page(path, PAGE, [box], width=WIDTH)

    assert plain.mode == marked.mode == "RGB"
    assert plain.size == marked.size
    assert plain.width == WIDTH
    rect = pixels(path, PAGE, box)
    assert yellowness(marked, inner(rect)) > yellowness(plain, inner(rect)) + 50
    assert ink(plain, inner(rect)) > 0.03, "the box covers the passage's text"

    changed = ImageChops.difference(plain, marked).getbbox()
    assert changed is not None
    slack = round(PAD * WIDTH / FAQ_WIDTH) + 3
    assert all(abs(a - b) <= slack for a, b in zip(changed, rect, strict=True)), (changed, rect)


def test_several_boxes_are_all_highlighted(faq: ParsedDocument) -> None:
    path = corpus_file(FAQ)
    first = element_on(faq, PAGE, "The official document giving installation instructions").bbox
    second = element_on(faq, PAGE, SENTENCE).bbox
    assert first is not None and second is not None
    plain = render_page(path, PAGE)
    marked = render_page(path, PAGE, [first, second])
    for box in (first, second):
        rect = inner(pixels(path, PAGE, box))
        assert yellowness(marked, rect) > yellowness(plain, rect) + 50
    top = pixels(path, PAGE, (0.0, 0.0, FAQ_WIDTH, 60.0))
    assert np.array_equal(rgb(plain, top), rgb(marked, top)), "the page's head is untouched"


def test_width_sets_the_image_size() -> None:
    path = corpus_file(FAQ)
    for width in (300, 901, 1234):
        image = render_page(path, 1, width=width)
        assert image.width == width
        assert image.height == pytest.approx(width * FAQ_HEIGHT / FAQ_WIDTH, abs=2)


# Each page of the made PDF: page 13 of the FAQ turned by /Rotate, and maybe cut to a crop box
# whose corner is not the media box's (left, bottom, right, top in PDF points).
CROP = (40.0, 60.0, 560.0, 800.0)
VARIANTS = [(0, None), (90, None), (180, None), (270, None), (0, CROP), (90, CROP)]


@pytest.fixture(scope="module")
def turned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = pypdfium2.PdfDocument(corpus_file(FAQ))
    made = pypdfium2.PdfDocument.new()
    try:
        made.import_pages(source, [PAGE - 1] * len(VARIANTS))
        for index, (rotation, crop) in enumerate(VARIANTS):
            page = made[index]
            page.set_rotation(rotation)
            if crop is not None:
                page.set_cropbox(*crop)
            page.close()
        path = tmp_path_factory.mktemp("turned") / "turned.pdf"
        made.save(path)
    finally:
        made.close()
        source.close()
    return path


def upright(path: Path, page: int, box: BBox) -> BBox:
    """A box on a turned, cropped page of `path` -> the same spot on the FAQ's own page."""
    pdf = pypdfium2.PdfDocument(path)
    try:
        shown = pdf[page - 1]
        rotation = shown.get_rotation()
        width, height = shown.get_size()
        left, _, _, top = shown.get_bbox()
    finally:
        pdf.close()
    x0, y0, x1, y1 = rotate_box(box, (360 - rotation) % 360, width, height)
    return x0 + left, y0 + FAQ_HEIGHT - top, x1 + left, y1 + FAQ_HEIGHT - top


@pytest.mark.parametrize(("page", "variant"), list(enumerate(VARIANTS, 1)))
def test_the_highlight_lands_on_the_text_of_turned_and_cropped_pages(
    turned: Path, page: int, variant: tuple[int, BBox | None]
) -> None:
    box = element_on(parse_file(turned), page, SENTENCE).bbox
    assert box is not None
    plain = render_page(turned, page)
    marked = render_page(turned, page, [box])
    rect = pixels(turned, page, box)

    assert ink(plain, rect) > 0.03, "the box holds text"
    # Turned back, the boxed pixels look like the same spot of the FAQ's own page at that scale.
    faq = corpus_file(FAQ)
    width = round(WIDTH * FAQ_WIDTH / shown_width(turned, page))
    same_spot = pixels(faq, PAGE, upright(turned, page, box), width)
    original = render_page(faq, PAGE, width=width).crop(same_spot)
    rotation = variant[0]
    assert likeness(plain.crop(rect).rotate(rotation, expand=True), original) > 0.4
    assert yellowness(marked, inner(rect, 3)) > yellowness(plain, inner(rect, 3)) + 50

    changed = ImageChops.difference(plain, marked).getbbox()
    assert changed is not None
    assert all(abs(a - b) <= 8 for a, b in zip(changed, rect, strict=True)), (
        variant,
        changed,
        rect,
    )


def test_a_file_that_is_gone(tmp_path: Path) -> None:
    gone = tmp_path / "moved away.pdf"
    with pytest.raises(PageRenderError, match=r"the original file moved away\.pdf is no longer at"):
        render_page(gone, 1)


def test_a_text_file_named_pdf(tmp_path: Path) -> None:
    fake = tmp_path / "notes.pdf"
    fake.write_text("just some notes, not a PDF\n" * 20)
    with pytest.raises(PageRenderError, match=r"notes\.pdf: the file at .* is not a PDF"):
        render_page(fake, 1)


def test_a_damaged_pdf(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(corpus_file(FAQ).read_bytes()[:5000])
    with pytest.raises(PageRenderError, match=r"broken\.pdf: the PDF is (truncated|damaged)"):
        render_page(broken, 1)


@pytest.mark.parametrize("page", [0, 74, 99])
def test_a_page_out_of_range(page: int) -> None:
    with pytest.raises(PageRenderError, match=rf"page {page} of a 73-page PDF"):
        render_page(corpus_file(FAQ), page)


def test_printed_numbers_come_from_the_pdfs_own_page_labels(tmp_path: Path) -> None:
    pdf = labelled_pdf(tmp_path / "book.pdf", ["Preface", "Contents", "Chapter one", "More"])
    # i, ii, then the body from 1: every page's printed number differs from its place.
    assert printed_labels(pdf, [1, 2, 3, 4]) == {1: "i", 2: "ii", 3: "1", 4: "2"}
    assert printed_label(pdf, 3) == "1"
    assert printed_labels(pdf, [9, 0]) == {}, "pages the file does not have are left out"


def test_a_page_printed_as_its_place_or_unlabelled_gets_no_printed_number(tmp_path: Path) -> None:
    plain = labelled_pdf(tmp_path / "plain.pdf", ["one", "two"], labels=None)
    same = labelled_pdf(
        tmp_path / "same.pdf", ["one", "two"], labels=b"<< /Nums [0 << /S /D >>] >>"
    )
    prefixed = labelled_pdf(
        tmp_path / "annex.pdf", ["one", "two"], labels=b"<< /Nums [0 << /S /D /P (A-) >>] >>"
    )
    assert printed_labels(plain, [1, 2]) == {}
    assert printed_labels(same, [1, 2]) == {}
    assert printed_labels(prefixed, [1, 2]) == {1: "A-1", 2: "A-2"}
    assert printed_label(plain, 1) is None


def test_the_faqs_printed_numbers_and_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    assert printed_labels(corpus_file(FAQ), [28]) == {28: "20"}  # as printed at its foot
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nnot really")
    assert printed_labels(broken, [1]) == {}
    assert printed_labels(tmp_path / "gone.pdf", [1]) == {}


def test_a_sources_pages_are_labelled_as_printed_from_the_stored_file(tmp_path: Path) -> None:
    pdf = labelled_pdf(tmp_path / "book.pdf", ["Preface", "Contents", "Chapter one", "More"])
    records = [
        DocumentRecord("c", "doc-a", "book.pdf", str(pdf), 4, 2, 0.0, "ok"),
        DocumentRecord("c", "doc-b", "notes.md", str(tmp_path / "notes.md"), 0, 1, 0.0, "ok"),
    ]
    book = Source(1, "book.pdf", [3, 4], None, "Chapter one More", 1.0, doc_id="doc-a")
    notes = Source(2, "notes.md", [], None, "notes", 0.5, doc_id="doc-b")
    with_printed_pages([book, notes], records)
    assert book.printed == {3: "1", 4: "2"} and notes.printed == {}
    assert pages_text(book) == "pp. 3-4 (printed 1-2)"
    assert pages_text(replace(book, pages=[3])) == "p. 3 (printed 1)"
    assert pages_text(replace(book, printed={})) == "pp. 3-4"
    assert Source.from_dict(book.to_dict()).printed == book.printed, "saved with the answer"
    assert Source.from_dict({**book.to_dict(), "printed": None}).printed == {}, "saved before"


def test_reading_a_sources_printed_numbers_is_cheap() -> None:
    faq = corpus_file(FAQ)
    records = [DocumentRecord("c", "faq", FAQ, str(faq), 134, 400, 0.0, "ok")]
    sources = [Source(n, FAQ, [20 + n], None, "t", 1.0, doc_id="faq") for n in range(1, 6)]
    started = time.perf_counter()
    with_printed_pages(sources, records)
    assert time.perf_counter() - started < 0.5, "a display-time read of five sources' pages"
    assert [s.printed for s in sources] == [{20 + n: str(12 + n)} for n in range(1, 6)]
