"""PDF pages as positioned paragraphs, read with PDFium, with OCR for scanned pages.

PDFium reports positions with the origin at the page's bottom-left; everything leaving this package
is in the model's convention: points from the page's top-left corner, y growing downwards.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from localllm.documents.layout import page_lines, paragraphs, rotate_box
from localllm.documents.model import BBox, DocumentError, Element
from localllm.documents.ocr import OCRError, ocr_image
from localllm.documents.outline import Mark, outline_sections, read_outline, title_sections
from localllm.documents.pdf_tables import has_ruled_grid

OCR_DPI = 300
OCR_MAX_PIXELS = 16_000_000  # a poster-sized page is rendered coarser than OCR_DPI, not at 80+ Mpx
OCR_WORKERS = max(1, min(4, os.cpu_count() or 1))  # tesseract processes at once, one thread each
_SCAN_TEXT_CHARS = 32  # fewer characters than this on a page that is mostly an image: a scan
_SCAN_COVERAGE = 0.5
_MAX_AHEAD = 64  # pages read ahead of the one waiting for its OCR
# PDFium is not thread-safe: every call into it in this process (parsing in an ingest thread,
# drawing a cited page for the chat) holds this lock, one page at a time.
PDFIUM = threading.RLock()


@dataclass
class PageResult:
    """One page: "text" (its own text layer), "ocr", "scan" (needs OCR), "blank" or "broken"."""

    number: int  # 1-based
    status: str
    elements: list[Element] = field(default_factory=list)
    error: str | None = None
    ruled: bool = False  # its vector paths draw a grid: pdf_tables looks for tables on it


@dataclass
class _Pending:
    result: PageResult
    top: float  # the crop box's top, in PDF y
    ocr: Future[list[tuple[str, BBox]]] | None = None
    scale: float = 1.0  # image pixels per point, for the OCR boxes
    turn: tuple[int, float, float] = (0, 0.0, 0.0)  # the page's /Rotate, unrotated width, height


def open_pdf(path: Path, name: str) -> pdfium.PdfDocument:
    with PDFIUM:
        return _open_pdf(path, name)


@contextmanager
def opened_pdf(path: Path, name: str) -> Iterator[pdfium.PdfDocument]:
    pdf = open_pdf(path, name)
    try:
        yield pdf
    finally:
        with PDFIUM:
            pdf.close()


def _open_pdf(path: Path, name: str) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(path)
    except pdfium.PdfiumError as e:
        raise DocumentError(f"{name}: {_load_error(e.err_code, path)}") from e
    except OSError as e:
        raise DocumentError(f"{name}: the file can't be read ({e.strerror or e})") from e


def _load_error(code: int | None, path: Path) -> str:
    if code == pdfium_c.FPDF_ERR_PASSWORD:
        return "the PDF is encrypted with a password; save an unprotected copy and add that"
    if code == pdfium_c.FPDF_ERR_SECURITY:
        return "the PDF uses an encryption scheme that can't be opened; save an unprotected copy"
    if code == pdfium_c.FPDF_ERR_SUCCESS:
        return "the PDF has no pages"
    if code == pdfium_c.FPDF_ERR_FILE:
        return "the file could not be opened"
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 1024))
        complete = b"%%EOF" in f.read()
    if not complete:
        return "the PDF is truncated (no %%EOF end marker): the download or copy is incomplete"
    return "the PDF is damaged: its structure can't be read"


def read_pages(pdf: pdfium.PdfDocument, *, ocr: bool) -> Iterator[PageResult]:
    """Every page, in order; scanned pages are OCRed when `ocr`, else come back as "scan".

    PDFium is not thread-safe, so pages are read and rendered here while tesseract runs on up to
    OCR_WORKERS rendered pages in the background; results still come out in page order.
    Sections come from the outline where the PDF has one, else from lines in a larger font.
    """
    with PDFIUM:
        outline = read_outline(pdf)
    section: str | None = None
    pending: deque[_Pending] = deque()
    pool = ThreadPoolExecutor(OCR_WORKERS, thread_name_prefix="ocr") if ocr else None
    try:
        for index in range(len(pdf) + 1):
            last = index == len(pdf)
            if not last:
                with PDFIUM:
                    pending.append(_read_page(pdf, index, pool, font_titles=not outline))
            while pending and (
                last
                or pending[0].ocr is None
                or sum(p.ocr is not None for p in pending) > OCR_WORKERS
                or len(pending) > _MAX_AHEAD
            ):
                done = _settle(pending.popleft())
                section = _sections(done, outline, section)  # in unrotated space, as bookmarks are
                rotation, width, height = done.turn
                for element in done.result.elements if rotation else ():
                    if element.bbox is not None:  # as the page is shown, like the OCR boxes
                        element.bbox = rotate_box(element.bbox, rotation, width, height)
                yield done.result
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _sections(done: _Pending, outline: dict[int, list[Mark]], section: str | None) -> str | None:
    elements = done.result.elements
    if outline:
        marks = outline.get(done.result.number - 1, [])
        return outline_sections(elements, marks, section, done.top)
    return title_sections(elements, section)


def _read_page(
    pdf: pdfium.PdfDocument, index: int, pool: ThreadPoolExecutor | None, *, font_titles: bool
) -> _Pending:
    number = index + 1
    try:
        page = pdf[index]
    except pdfium.PdfiumError as e:
        return _Pending(PageResult(number, "broken", error=str(e)), 0.0)
    try:
        left, bottom, right, top = page.get_bbox()
        textpage = page.get_textpage()
        try:
            lines = page_lines(textpage, left, top)
        finally:
            textpage.close()
        chars = sum(len(line.text) for line in lines)
        if chars < _SCAN_TEXT_CHARS and _image_coverage(page) >= (
            _SCAN_COVERAGE if chars else 1e-9
        ):
            if pool is None:
                return _Pending(PageResult(number, "scan"), top)
            width, height = page.get_size()
            scale = min(OCR_DPI / 72, math.sqrt(OCR_MAX_PIXELS / max(width * height, 1.0)))
            image = page.render(scale=scale, grayscale=True).to_pil()
            job = pool.submit(ocr_image, image, dpi=round(scale * 72))
            return _Pending(PageResult(number, "ocr"), top, job, scale)
        if not lines:
            return _Pending(PageResult(number, "blank"), top)
        elements = paragraphs(lines, number, font_titles=font_titles)
        turn = (page.get_rotation(), right - left, top - bottom)
        ruled = turn[0] == 0 and has_ruled_grid(page)
        return _Pending(PageResult(number, "text", elements, ruled=ruled), top, turn=turn)
    except pdfium.PdfiumError as e:
        return _Pending(PageResult(number, "broken", error=str(e)), 0.0)
    finally:
        page.close()


def _settle(pending: _Pending) -> _Pending:
    """Wait for the page's OCR, if any, and turn its boxes from pixels into points."""
    if pending.ocr is None:
        return pending
    result, scale = pending.result, pending.scale
    try:
        found = pending.ocr.result()
    except OCRError as e:
        result.status, result.error = "scan", str(e)
        return pending
    # The render shows the crop box, so pixels / scale are already points from its top-left.
    result.elements = [
        Element(
            text=text, page=result.number, bbox=(x0 / scale, y0 / scale, x1 / scale, y1 / scale)
        )
        for text, (x0, y0, x1, y1) in found
    ]
    return pending


def _image_coverage(page: pdfium.PdfPage) -> float:
    """The share of the page that its largest image covers (0 when it has none)."""
    width, height = page.get_size()
    largest = 0.0
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3):
        x0, y0, x1, y1 = obj.get_bounds()
        largest = max(largest, (x1 - x0) * (y1 - y0))
    return min(1.0, largest / max(width * height, 1.0))
