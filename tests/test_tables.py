"""Markdown tables: built from cells or HTML, and cut between rows under a repeated header."""

from __future__ import annotations

from localllm.documents.chunk import chunk_document
from localllm.documents.model import Element, ParsedDocument
from localllm.documents.tables import (
    html_table_rows,
    is_markdown_table,
    markdown_table,
    split_table,
)


def words(text: str) -> int:
    return len(text.split())


def test_markdown_from_cells_drops_empty_rows_and_columns_and_escapes_pipes() -> None:
    rows = [["Name", "", "Note"], ["", "", ""], ["Ana", "", "a|b"], ["Bo", "", " two\nlines "]]
    assert markdown_table(rows) == (
        "| Name | Note |\n| --- | --- |\n| Ana | a\\|b |\n| Bo | two lines |"
    )
    assert markdown_table([["", ""]]) == ""


def test_rows_from_html_with_ragged_rows() -> None:
    html = "<table><tr><th>A</th><th>B</th></tr><tr><td>1</td></tr></table>"
    assert html_table_rows(html) == [["A", "B"], ["1"]]
    assert markdown_table(html_table_rows(html)) == "| A | B |\n| --- | --- |\n| 1 |  |"
    assert html_table_rows("<p>no table</p>") == []


def test_split_keeps_the_header_on_every_piece() -> None:
    table = markdown_table([["Key", "Value"]] + [[f"k{i}", f"v{i}"] for i in range(20)])
    assert is_markdown_table(table)
    pieces = list(split_table(table, words, budget=24))
    assert len(pieces) > 2
    for piece in pieces:
        assert piece.startswith("| Key | Value |\n| --- | --- |\n| k") and words(piece) <= 24
    rows = [line for piece in pieces for line in piece.split("\n")[2:]]
    assert rows == table.split("\n")[2:]


def test_a_row_too_long_for_any_chunk_is_cut_only_then() -> None:
    long_row = ["big", " ".join(["word"] * 80)]
    table = markdown_table([["Key", "Value"], ["a", "b"], long_row, ["c", "d"]])
    doc = ParsedDocument("t", "t", "0" * 64, 0, [Element(table, None, kind="table")])
    chunks = [c.text for c in chunk_document(doc, words, max_tokens=30)]
    assert chunks[0] == "| Key | Value |\n| --- | --- |\n| a | b |"
    assert chunks[1].startswith("| Key | Value |\n| --- | --- |\n| big | word word")
    assert chunks[-1] == "| Key | Value |\n| --- | --- |\n| c | d |"
    assert all(words(c) <= 30 for c in chunks)
