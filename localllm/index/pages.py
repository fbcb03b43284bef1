"""One PDF page drawn as an image, with the passages an answer cited highlighted on it.

Boxes arrive as the parser stores them: points from the top-left corner of the page as it is shown
(its crop box, turned by its /Rotate). PDFium renders exactly that view, so a box maps onto the
image by the render scale alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image, ImageDraw

from localllm.documents.model import BBox, DocumentError
from localllm.documents.pdf import PDFIUM, open_pdf
from localllm.errors import LocalLLMError
from localllm.index.catalog import DocumentRecord

PAD = 2.0  # points around a box, so the highlight doesn't clip the ascenders
FILL = (255, 214, 0, 96)  # translucent yellow
OUTLINE = (204, 150, 0, 255)
OUTLINE_WIDTH = 2  # pixels


class PageRenderError(LocalLLMError):
    """A cited page that can't be shown; the message says which file and why."""


def render_page(
    pdf_path: Path, page: int, boxes: Sequence[BBox] = (), *, width: int = 900
) -> Image.Image:
    """Page `page` (1-based) of the PDF, `width` pixels wide, with `boxes` highlighted; RGB."""
    if width < 1:
        raise ValueError(f"width must be at least 1 pixel, got {width}")
    path = Path(pdf_path)
    with PDFIUM:
        pdf = _open(path)
        try:
            image, scale = _render(pdf, page, width, path.name)
        finally:
            pdf.close()
    return highlight(image, boxes, scale)


def printed_label(pdf_path: Path, page: int) -> str | None:
    """The number printed on page `page` (1-based) by the PDF's own page labels ("38", "iv"), where
    it differs from the page's place in the file; None otherwise or when it can't be read."""
    return printed_labels(pdf_path, [page]).get(page)


def printed_labels(pdf_path: Path, pages: Iterable[int]) -> dict[int, str]:
    """The number printed on each of `pages` (1-based) by the PDF's own page labels, for those
    where it differs from the page's place in the file; {} for a file without labels or that
    can't be read (the pages still show, by their place)."""
    wanted = sorted(set(pages))
    if not wanted:
        return {}
    with PDFIUM:
        try:
            pdf = _open(Path(pdf_path))
        except PageRenderError:
            return {}
        try:
            labels = {page: _label(pdf, page) for page in wanted if 0 < page <= len(pdf)}
        finally:
            pdf.close()
    return {page: label for page, label in labels.items() if label and label != str(page)}


def printed_pages(
    records: Iterable[DocumentRecord], pages_of: Mapping[str, Iterable[int]]
) -> dict[str, dict[int, str]]:
    """For each stored PDF among `records` whose doc_id is in `pages_of`: the printed numbers of
    those pages that have their own (printed_labels), by doc_id; read from the stored file, so a
    document indexed before page labels were read gets them too."""
    found: dict[str, dict[int, str]] = {}
    for record in records:
        path = Path(record.source)
        if (
            record.doc_id in pages_of
            and record.doc_id not in found
            and path.suffix.lower() == ".pdf"
        ):
            found[record.doc_id] = printed_labels(path, pages_of[record.doc_id])
    return {doc_id: labels for doc_id, labels in found.items() if labels}


def _label(pdf: pdfium.PdfDocument, page: int) -> str:
    try:
        return (pdf.get_page_label(page - 1) or "").strip()
    except Exception:  # a damaged label tree: the page still shows, unlabelled
        return ""


def highlight(image: Image.Image, boxes: Sequence[BBox], scale: float) -> Image.Image:
    """`image` with each box (in points; `scale` pixels per point) filled and outlined; RGB."""
    if not boxes:
        return image.convert("RGB")
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for box in boxes:
        draw.rectangle(_pixels(box, scale), fill=FILL, outline=OUTLINE, width=OUTLINE_WIDTH)
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


def _pixels(box: BBox, scale: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    left, right = sorted((x0, x1))
    top, bottom = sorted((y0, y1))
    return (
        (left - PAD) * scale,
        (top - PAD) * scale,
        (right + PAD) * scale,
        (bottom + PAD) * scale,
    )


def _open(path: Path) -> pdfium.PdfDocument:
    if not path.is_file():
        raise PageRenderError(f"the original file {path.name} is no longer at {path}")
    if not _looks_like_pdf(path):
        raise PageRenderError(f"{path.name}: the file at {path} is not a PDF (any more)")
    try:
        return open_pdf(path, path.name)
    except DocumentError as e:
        raise PageRenderError(str(e)) from e


def _looks_like_pdf(path: Path) -> bool:
    # Readers accept the header anywhere in the first kilobyte.
    try:
        with path.open("rb") as f:
            return b"%PDF-" in f.read(1024)
    except OSError as e:
        raise PageRenderError(f"{path.name}: the file can't be read ({e.strerror or e})") from e


def _render(
    pdf: pdfium.PdfDocument, number: int, width: int, name: str
) -> tuple[Image.Image, float]:
    """The page as a PIL image and the pixels per point it was drawn at."""
    total = len(pdf)
    if not 1 <= number <= total:
        raise PageRenderError(
            f"{name}: can't show page {number} of a {total}-page PDF (pages run from 1 to {total})"
        )
    try:
        page = pdf[number - 1]
    except pdfium.PdfiumError as e:
        raise PageRenderError(f"{name}: page {number} is damaged and can't be shown ({e})") from e
    try:
        shown_width = page.get_width()  # of the crop box, turned by /Rotate
        if shown_width <= 0:
            raise PageRenderError(f"{name}: page {number} has no area to show")
        # PDFium rounds the bitmap size up: a hair under the exact scale keeps it at `width`.
        scale = width / shown_width * (1 - 1e-9)
        image = page.render(scale=scale).to_pil()
    except pdfium.PdfiumError as e:
        raise PageRenderError(f"{name}: page {number} is damaged and can't be shown ({e})") from e
    finally:
        page.close()
    return image, scale
