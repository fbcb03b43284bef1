"""Ruled tables in PDFs come back as Markdown table elements boxed where the table is drawn, and
their chunks cite that box; pages without a grid are read as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from localllm.documents.chunk import chunk_document
from localllm.documents.parse import parse_file
from tests.corpus import corpus_file
from tests.format_factory import write_table_pdf

CELLS = [["Animal", "Count", "Site"], ["Okapi", "14", "Kisangani"], ["Bonobo", "31", "Lomako"]]
TABLE = (
    "| Animal | Count | Site |\n| --- | --- | --- |\n"
    "| Okapi | 14 | Kisangani |\n| Bonobo | 31 | Lomako |"
)
ABOVE = "Census of the northern reserve, counted in spring."
BELOW = "The okapi count rose for the third year."


def test_a_ruled_table_is_one_markdown_element_in_its_box(tmp_path: Path) -> None:
    doc = parse_file(write_table_pdf(tmp_path / "census.pdf", CELLS))
    assert [(e.kind, e.page, e.text) for e in doc.elements] == [
        ("text", 1, ABOVE),
        ("table", 1, TABLE),
        ("text", 1, BELOW),
    ]
    # the grid: 3 columns of 150 points, 3 rows of 20, its top-left corner at (72, 150)
    assert doc.elements[1].bbox == pytest.approx((72.0, 150.0, 522.0, 210.0))


def test_the_chunk_of_a_table_is_boxed_by_the_table(tmp_path: Path) -> None:
    doc = parse_file(write_table_pdf(tmp_path / "census.pdf", CELLS))
    chunks = chunk_document(doc, lambda text: len(text.split()), max_tokens=200)
    holding = [c for c in chunks if TABLE in c.text]
    assert len(holding) == 1 and holding[0].pages == [1]
    assert (1, pytest.approx((72.0, 150.0, 522.0, 210.0))) in holding[0].boxes


def test_the_same_text_without_rules_stays_a_paragraph(tmp_path: Path) -> None:
    doc = parse_file(write_table_pdf(tmp_path / "plain.pdf", CELLS, ruled=False))
    assert [e.kind for e in doc.elements] == ["text", "text", "text"]
    assert doc.elements[1].text == "Animal Count Site\nOkapi 14 Kisangani\nBonobo 31 Lomako"


def test_a_grid_with_empty_cells_is_a_drawing_not_a_table(tmp_path: Path) -> None:
    empty = [["", "", ""], ["", "", ""], ["", "", "x"]]
    doc = parse_file(write_table_pdf(tmp_path / "grid.pdf", empty))
    assert [(e.kind, e.text) for e in doc.elements] == [
        ("text", ABOVE),
        ("text", "x"),
        ("text", BELOW),
    ]


def test_tables_of_a_real_manual() -> None:
    doc = parse_file(corpus_file("developers-reference.pdf"))
    tables = [e for e in doc.elements if e.kind == "table"]
    assert [(e.page, e.section) for e in tables] == [
        (65, "Out-of-date"),
        (65, "Out-of-date"),
        (65, "Circular dependencies"),
    ]
    assert tables[1].text == (
        "|  | alpha | arm | hurd-i386 |\n| --- | --- | --- | --- |\n"
        "| testing | 1 | 1 | - |\n| unstable | 2 | - | 1 |"
    )
    assert tables[2].text.split("\n")[2] == "| a | 1; depends: b=1 | 2; depends: b=2 |"
    assert tables[1].bbox == pytest.approx((221.5, 285.5, 390.5, 322.5), abs=1.0)
    page = [e.text for e in doc.elements if e.page == 65 and e.kind != "table"]
    assert not any("unstable 2 - 1" in text for text in page), "the table's text is not read twice"
