"""Ruled tables on PDF pages as Markdown table elements, boxed where the table is.

PDFium has no table finder; pdfplumber has a good one for tables drawn with rules (lines between
rows and columns), but it reads pages through pdfminer, ~100x slower than PDFium. So PDFium first
looks at every page's vector paths (a fraction of a millisecond): only a page with at least three
distinct horizontal and three distinct vertical rules, a grid, is handed to pdfplumber. Each table
found there (two rows and two columns at least, half its cells filled) replaces the paragraphs
PDFium read inside its box with one "table" element: its rows as Markdown, its box the table's.
A page pdfplumber can't read keeps its paragraphs.
"""

from __future__ import annotations

import ctypes
from contextlib import suppress
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from localllm.documents.model import BBox, Element
from localllm.documents.tables import markdown_table

_THIN = 3.0  # points: a path this thin is a rule
_LONG = 8.0  # and at least this long
_MIN_RULES = 3
_X_TOLERANCE = 1.5  # pdfplumber's default (3) runs words together in tight cells


def has_ruled_grid(page: pdfium.PdfPage) -> bool:
    """Three distinct horizontal and three distinct vertical rules: a grid a table may be drawn in.
    Call with PDFium's lock held."""
    raw = page.raw
    left, bottom, right, top = (ctypes.c_float() for _ in range(4))
    xs: set[int] = set()
    ys: set[int] = set()
    for i in range(pdfium_c.FPDFPage_CountObjects(raw)):
        obj = pdfium_c.FPDFPage_GetObject(raw, i)
        if pdfium_c.FPDFPageObj_GetType(obj) != pdfium_c.FPDF_PAGEOBJ_PATH:
            continue
        if not pdfium_c.FPDFPageObj_GetBounds(obj, left, bottom, right, top):
            continue
        width, height = right.value - left.value, top.value - bottom.value
        if height < _THIN and width > _LONG:
            ys.add(round(bottom.value))
        elif width < _THIN and height > _LONG:
            xs.add(round(left.value))
        if len(xs) >= _MIN_RULES and len(ys) >= _MIN_RULES:
            return True
    return False


class TableFinder:
    """pdfplumber over one PDF, opened on the first page that needs it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pdf: Any = None
        self._failed = False

    def close(self) -> None:
        if self._pdf is not None:
            with suppress(Exception):
                self._pdf.close()
            self._pdf = None

    def with_tables(self, number: int, elements: list[Element]) -> list[Element]:
        """The page's elements, those inside a table replaced by the table."""
        tables = self._tables(number)
        if not tables:
            return elements
        out: list[Element] = []
        placed: set[int] = set()
        for element in elements:
            inside = next((i for i, t in enumerate(tables) if _inside(element.bbox, t[0])), None)
            if inside is None:
                out.append(element)
            elif inside not in placed:
                placed.add(inside)
                out.extend(_table_elements(tables[inside], number, element.section))
        for i, table in enumerate(tables):  # a table with no text PDFium saw: after what is above
            if i not in placed:
                at = sum(1 for e in out if e.bbox is not None and e.bbox[1] < table[0][1])
                section = out[at - 1].section if at else None
                out[at:at] = _table_elements(table, number, section)
        return out

    def _tables(self, number: int) -> list[tuple[BBox, list[list[str]]]]:
        if self._failed:
            return []
        try:
            if self._pdf is None:
                import pdfplumber

                self._pdf = pdfplumber.open(str(self.path))
            page = self._pdf.pages[number - 1]
            offset_x, offset_y = page.bbox[0], page.bbox[1]  # to the crop box's top-left
            found = []
            for table in page.find_tables():
                rows = [[_cell(c) for c in row] for row in table.extract(x_tolerance=_X_TOLERANCE)]
                if _is_table(rows):
                    x0, top, x1, bottom = table.bbox
                    box = (x0 - offset_x, top - offset_y, x1 - offset_x, bottom - offset_y)
                    found.append((box, rows))
            return found
        except Exception:  # pdfminer failed on this file: its pages keep PDFium's paragraphs
            self._failed = True
            self.close()
            return []


def _cell(value: str | None) -> str:
    return " ".join((value or "").split())


def _is_table(rows: list[list[str]]) -> bool:
    cells = [c for row in rows for c in row]
    columns = max((len(row) for row in rows), default=0)
    return len(rows) >= 2 and columns >= 2 and sum(bool(c) for c in cells) * 2 >= len(cells)


def _table_elements(
    table: tuple[BBox, list[list[str]]], page: int, section: str | None
) -> list[Element]:
    """The table, and its caption before it when its first row is one cell spanning the table."""
    box, rows = table
    caption = None
    if len(rows) > 2 and sum(bool(c) for c in rows[0]) == 1 and len(rows[0]) > 1:
        caption, rows = next(c for c in rows[0] if c), rows[1:]
    elements = [Element(caption, page, section=section, bbox=box)] if caption else []
    elements.append(Element(markdown_table(rows), page, kind="table", section=section, bbox=box))
    return elements


def _inside(bbox: BBox | None, table: BBox) -> bool:
    if bbox is None:
        return False
    x, y = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    return table[0] <= x <= table[2] and table[1] <= y <= table[3]
