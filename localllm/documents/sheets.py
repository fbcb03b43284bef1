"""Spreadsheets (.xlsx) and comma-separated values (.csv) as Markdown tables, with unstructured's
partition_xlsx and partition_csv.

Each sheet is a page (its 1-based position in the workbook) and a section (its name), so a cited
chunk says which sheet it came from. A block of cells standing apart on a sheet is a table of its
own (unstructured's sub-table finder); a lone cell above one (a caption) is text before it. The
first row of each table is its header: the chunker repeats it on every chunk of a long table.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

from localllm.documents.model import Element
from localllm.documents.partitioned import partition, table_text


def read_xlsx(path: Path) -> tuple[list[Element], int]:
    """Tables and captions, sheet by sheet; and the number of sheets."""
    with path.open("rb") as f:  # a file, not a name: openpyxl refuses names not ending in .xlsx
        found = partition("xlsx", "partition_xlsx", file=f, find_subtable=True)
        names = _sheet_names(f)
    elements: list[Element] = []
    for item in found:
        sheet = item.metadata.page_name or None
        number = item.metadata.page_number
        elements.extend(_element(item, number, sheet))
    return elements, max(len(names), 1)


def read_csv(text: str) -> list[Element]:
    """One table: the first line is its header."""
    data = io.BytesIO(text.encode("utf-8"))
    found = partition("csv", "partition_csv", file=data, encoding="utf-8")
    return [e for item in found for e in _element(item, None, None)]


def _element(item: Any, page: int | None, sheet: str | None) -> list[Element]:
    if item.category == "Table":
        text = table_text(item)
        kind = "table"
    else:
        text = " ".join(str(item.text).split())
        kind = "text"
    return [Element(text, page, kind=kind, section=sheet)] if text else []


def _sheet_names(f: BinaryIO) -> list[str]:
    import openpyxl

    f.seek(0)
    workbook = openpyxl.load_workbook(f, read_only=True)
    try:
        return list(workbook.sheetnames)
    finally:
        workbook.close()
