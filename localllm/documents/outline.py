"""Sections of a PDF: from its outline (bookmarks) where it has one, else from its title lines."""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from localllm.documents.model import Element


@dataclass(slots=True)
class Mark:
    title: str
    y: float | None  # PDF y (bottom-up) the bookmark points at; None when it names only the page


def read_outline(pdf: pdfium.PdfDocument) -> dict[int, list[Mark]]:
    """Bookmarks by 0-based page index, in outline order."""
    marks: dict[int, list[Mark]] = {}
    has_x, has_y, has_zoom = (ctypes.c_int() for _ in range(3))
    x, y, zoom = (ctypes.c_float() for _ in range(3))
    for bookmark in pdf.get_toc():
        title = " ".join(bookmark.get_title().split())
        dest = bookmark.get_dest()
        index = dest.get_index() if dest is not None else None
        if dest is None or not title or index is None or not 0 <= index < len(pdf):
            continue
        located = pdfium_c.FPDFDest_GetLocationInPage(dest.raw, has_x, has_y, has_zoom, x, y, zoom)
        at = y.value if located and has_y.value and y.value > 0 else None
        marks.setdefault(index, []).append(Mark(title, at))
    return marks


def outline_sections(
    elements: list[Element], marks: list[Mark], section: str | None, top_of_page: float
) -> str | None:
    """Set each element's section to the last bookmark at or above its top, or to `section` (carried
    in from the pages before); mark the elements bookmarks point at as titles.

    Returns the section carried out to the next page. top_of_page: the crop box's top, in PDF y.
    """
    starts: list[tuple[float, str]] = []
    for mark in marks:
        hit = _find_title(elements, mark.title)
        if hit is not None:
            hit.kind = "title"
        if mark.y is not None:
            starts.append((top_of_page - mark.y, mark.title))
        elif hit is not None and hit.bbox is not None:
            starts.append((hit.bbox[1], mark.title))
        else:
            starts.append((-math.inf, mark.title))
    starts.sort(key=lambda start: start[0])
    for element in elements:
        element.section = section
        element_top = element.bbox[1] if element.bbox else math.inf
        for start, title in starts:
            if start <= element_top + 2:
                element.section = title
    return starts[-1][1] if starts else section


def title_sections(elements: list[Element], section: str | None) -> str | None:
    """Without an outline: each title starts a section. Returns the section carried out."""
    for element in elements:
        if element.kind == "title":
            section = " ".join(element.text.split())
        element.section = section
    return section


def _find_title(elements: list[Element], title: str) -> Element | None:
    """The element that starts with the bookmark's title, give or take a section number."""
    wanted = title.casefold()
    for element in elements:
        first = " ".join(element.text.split("\n", 1)[0].split()).casefold()
        if first.endswith(wanted) and len(first) <= len(wanted) + 12:
            return element
    return None
