"""A PDFium text page -> paragraphs with boxes: lines grouped by spacing, indentation and font size.

PDFium has no layout analysis; it gives the text in content order with generated line breaks, and a
box per run of characters. Lines are measured with a few calls each (no per-character Python loop,
which would cost more than PDFium's own extraction), then grouped.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import statistics
from dataclasses import dataclass

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from localllm.documents.model import BBox, Element

# Tabs and stray line breaks become spaces; other control characters, and the U+FFFE PDFium puts
# where a word was hyphenated across lines (it already joined the halves), are dropped.
_CLEAN = {**dict.fromkeys(range(32), None), **dict.fromkeys(map(ord, "\t\n\r\v\f"), " ")}
_CLEAN.update({0x7F: None, 0xFFFE: None, 0xFFFF: None})


@dataclass(slots=True)
class Line:
    """One text line in points from the page's top-left corner."""

    text: str
    x0: float
    top: float
    x1: float
    bottom: float
    base: float  # baseline, from the top
    size: float  # font size of its first character


def page_lines(textpage: pdfium.PdfTextPage, left: float, top: float) -> list[Line]:
    """The page's text lines in PDFium's order; (left, top) is the crop box's top-left corner."""
    raw = textpage.raw
    text = textpage.get_text_range()
    if len(text) != textpage.count_chars():
        return _lines_from_rects(textpage, left, top)
    x_left, y_top, x_right, y_bottom = (ctypes.c_double() for _ in range(4))
    ox, oy = ctypes.c_double(), ctypes.c_double()
    lines: list[Line] = []
    pos = 0
    # PDFium puts "\r\n" (two generated characters) between lines: text offsets are char indices.
    for chunk in text.split("\r\n"):
        n = len(chunk)
        stripped = chunk.lstrip()
        if stripped:
            rects = pdfium_c.FPDFText_CountRects(raw, pos, n)
            x0 = y_low = math.inf
            x1 = y_high = -math.inf
            for i in range(rects):
                pdfium_c.FPDFText_GetRect(raw, i, x_left, y_top, x_right, y_bottom)
                x0, x1 = min(x0, x_left.value), max(x1, x_right.value)
                y_low, y_high = min(y_low, y_bottom.value), max(y_high, y_top.value)
            first = pos + n - len(stripped)
            size = pdfium_c.FPDFText_GetFontSize(raw, first) or 1.0
            pdfium_c.FPDFText_GetCharOrigin(raw, first, ox, oy)
            if not rects:
                x0 = x1 = ox.value
                y_low, y_high = oy.value, oy.value + size
            elif size < 0.25 * (y_high - y_low):  # a "1 Tf" font scaled up by the text matrix
                size = y_high - y_low
            clean = chunk.translate(_CLEAN).strip()
            if clean:
                box = (x0 - left, top - y_high, x1 - left, top - y_low)
                lines.append(Line(clean, *box, top - oy.value, size))
        pos += n + 2
    return lines


def _lines_from_rects(textpage: pdfium.PdfTextPage, left: float, top: float) -> list[Line]:
    """Fallback when text offsets don't match character indices: one line per text rectangle."""
    lines = []
    for i in range(textpage.count_rects()):
        x0, y0, x1, y1 = textpage.get_rect(i)
        text = textpage.get_text_bounded(x0, y0, x1, y1).translate(_CLEAN).strip()
        if text:
            lines.append(Line(text, x0 - left, top - y1, x1 - left, top - y0, top - y0, y1 - y0))
    return lines


def paragraphs(lines: list[Line], page: int, *, font_titles: bool) -> list[Element]:
    """Group consecutive lines into blocks, breaking where the spacing, indentation, column or font
    size changes. With font_titles, a short block in a larger font than the page's body is a title."""
    steps = [b.base - a.base for a, b in itertools.pairwise(lines) if b.base - a.base > 0.5]
    leading = statistics.median(steps) if steps else 0.0
    blocks: list[list[Line]] = [[lines[0]]]
    for prev, line in itertools.pairwise(lines):
        size = max(prev.size, line.size)
        step = line.base - prev.base
        same_row = abs(step) < 0.3 * size and line.x0 >= prev.x1 - 1
        next_row = 0.5 < step <= min(max(leading * 1.15, size * 1.05), size * 2.5)
        # Not indented (a new paragraph) nor in another column; back to the margin is fine after
        # a paragraph's indented first line.
        first = len(blocks[-1]) == 1
        below = prev.x0 - (3 if first else 1) * size < line.x0 <= prev.x0 + size
        similar = abs(line.size - prev.size) <= 0.15 * size
        if same_row or (next_row and below and similar):
            blocks[-1].append(line)
        else:
            blocks.append([line])
    body = statistics.median(line.size for line in lines) if font_titles else math.inf
    return [_element(block, page, body) for block in blocks]


def _element(block: list[Line], page: int, body: float) -> Element:
    parts = [block[0].text]
    for prev, line in itertools.pairwise(block):
        parts.append(" " if abs(line.base - prev.base) < 0.3 * line.size else "\n")
        parts.append(line.text)
    text = "".join(parts)
    bbox = (
        min(line.x0 for line in block),
        min(line.top for line in block),
        max(line.x1 for line in block),
        max(line.bottom for line in block),
    )
    size = max(line.size for line in block)
    heading = size >= 1.2 * body and len(block) <= 2 and len(text) <= 120
    kind = "title" if heading and any(c.isalpha() for c in text) else "text"
    return Element(text=text, page=page, kind=kind, bbox=bbox)


def rotate_box(bbox: BBox, rotation: int, width: float, height: float) -> BBox:
    """A box on the unrotated page (width x height) -> the same box on the page as displayed,
    turned clockwise by `rotation` degrees (the page's /Rotate), still from the top-left."""
    x0, y0, x1, y1 = bbox
    if rotation == 90:
        return (height - y1, x0, height - y0, x1)
    if rotation == 180:
        return (width - x1, height - y1, width - x0, height - y0)
    if rotation == 270:
        return (y0, width - x1, y1, width - x0)
    return bbox
