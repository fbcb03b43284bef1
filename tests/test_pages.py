"""A cited PDF page drawn as an image, with the cited passage highlighted where its text is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pypdfium2
import pytest
from PIL import Image, ImageChops

from localllm.documents.layout import rotate_box
from localllm.documents.model import BBox, Element, ParsedDocument
from localllm.documents.parse import parse_file
from localllm.index.pages import PAD, PageRenderError, render_page
from tests.corpus import corpus_file

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
