"""Tables as Markdown: the first row is the header, and a table split to fit a chunk repeats it.

A table's text is a GitHub-style Markdown table (header row, `---` rule, one line per row), which
both the embedder and a reader of a cited chunk can follow. split_table() cuts between rows only,
and every piece starts with the header, so a chunk never holds rows without knowing their columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

CountTokens = Callable[[str], int]

_RULE_CELL = "---"


def html_table_rows(html: str) -> list[list[str]]:
    """The cells of the first <table> in `html`, row by row, with white space collapsed."""
    import lxml.html

    if not html.strip():
        return []
    root = lxml.html.fragment_fromstring(html, create_parent="div")
    table = root if root.tag == "table" else next(root.iter("table"), None)
    if table is None:
        return []
    rows = []
    for tr in table.iter("tr"):
        cells = [" ".join(cell.text_content().split()) for cell in tr if cell.tag in ("td", "th")]
        rows.append(cells)
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    """Rows (the first is the header) as a Markdown table; empty rows and columns left out."""
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    keep = [c for c in range(width) if any(row[c].strip() for row in rows)]
    rows = [[row[c] for c in keep] for row in rows]
    lines = [_line(rows[0]), _line([_RULE_CELL] * len(keep))]
    lines.extend(_line(row) for row in rows[1:])
    return "\n".join(lines)


def _line(cells: list[str]) -> str:
    escaped = (" ".join(cell.split()).replace("|", "\\|") for cell in cells)
    return "| " + " | ".join(escaped) + " |"


def is_markdown_table(text: str) -> bool:
    lines = text.split("\n", 2)
    return len(lines) >= 2 and lines[0].startswith("|") and lines[1].startswith("| ---")


def split_table(text: str, count: CountTokens, budget: int) -> Iterator[str]:
    """A Markdown table cut between rows into pieces of at most `budget` tokens, each headed by
    the header row and its rule. A single row too long for any piece comes alone under the header,
    over budget: the chunker cuts that row and puts the header over each part."""
    lines = text.split("\n")
    head = "\n".join(lines[:2])
    head_tokens = count(head)
    rows: list[str] = []
    tokens = head_tokens
    for line in lines[2:]:
        line_tokens = count(line) + 1  # the line break joins it to the rows above
        if rows and tokens + line_tokens > budget:
            yield "\n".join([head, *rows])
            rows, tokens = [], head_tokens
        rows.append(line)
        tokens += line_tokens
    if rows or not lines[2:]:
        yield "\n".join([head, *rows])
