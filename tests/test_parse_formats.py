"""parse_file on Word, PowerPoint, HTML, Markdown and text files written by the tests themselves,
and every format parsed the same in a process with no network."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localllm.documents.parse import parse_file
from tests.conftest import ROOT, require
from tests.corpus import corpus_file


def write_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Installing the widget", level=1)
    document.add_paragraph(
        "Run the installer twice; the widget configures itself on the second run."
    )
    document.add_paragraph("Keep the receipt", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("Part", "Count"), ("Bolt", "12")], strict=True):
        for cell, value in zip(row.cells, cells, strict=True):
            cell.text = value
    document.add_page_break()
    document.add_heading("Removing the widget", level=2)
    document.add_paragraph("Delete the widget folder, then empty the trash.")
    document.save(str(path))
    return path


def test_docx(tmp_path: Path) -> None:
    doc = parse_file(write_docx(tmp_path / "widget manual.docx"))
    assert doc.pages == 2 and doc.warnings == []
    got = [(e.kind, e.page, e.section, e.text) for e in doc.elements]
    first, second = "Installing the widget", "Removing the widget"
    assert got == [
        ("title", 1, first, first),
        (
            "text",
            1,
            first,
            "Run the installer twice; the widget configures itself on the second run.",
        ),
        ("list", 1, first, "Keep the receipt"),
        ("table", 1, first, "Part | Count\nBolt | 12"),
        ("title", 2, second, second),
        ("text", 2, second, "Delete the widget folder, then empty the trash."),
    ]


def write_pptx(path: Path) -> Path:
    import pptx
    from pptx.util import Inches

    deck = pptx.Presentation()
    for title, body, notes in [
        (
            "Quarterly results",
            "Revenue grew by a third in the spring quarter.",
            "Mention the new shop.",
        ),
        ("Next steps", "Open a second warehouse in Lyon.", ""),
    ]:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    box = deck.slides[1].shapes.add_textbox(Inches(1), Inches(6), Inches(4), Inches(0.5))
    box.text_frame.text = "Budget: ask finance."
    deck.save(str(path))
    return path


def test_pptx(tmp_path: Path) -> None:
    doc = parse_file(write_pptx(tmp_path / "deck.pptx"))
    assert doc.pages == 2
    got = [(e.kind, e.page, e.section, e.text) for e in doc.elements]
    assert got == [
        ("title", 1, "Quarterly results", "Quarterly results"),
        ("text", 1, "Quarterly results", "Revenue grew by a third in the spring quarter."),
        ("text", 1, "Quarterly results", "Mention the new shop."),
        ("title", 2, "Next steps", "Next steps"),
        ("text", 2, "Next steps", "Open a second warehouse in Lyon."),
        ("text", 2, "Next steps", "Budget: ask finance."),
    ]
    budget = doc.elements[-1]
    assert budget.bbox == pytest.approx((72.0, 432.0, 360.0, 468.0)), "points from the top-left"


HTML = """<!doctype html>
<html><head><title>Ignored</title><style>p { color: red }</style>
<script>var notText = "do not index";</script></head>
<body>
<nav>Home</nav>
<h1>Garden   guide</h1>
<p>Water the <b>tomatoes</b> every morning.<br>Never at noon.</p>
<h2>Pests</h2>
<ul><li>Slugs: use copper tape.</li><li>Aphids: ladybirds help.</li></ul>
<table><tr><th>Plant</th><th>Days</th></tr><tr><td>Basil</td><td>7</td></tr></table>
<div>Loose text <!-- a comment --> in a div.</div>
</body></html>
"""


def test_html(tmp_path: Path) -> None:
    path = tmp_path / "garden.html"
    path.write_text(HTML)
    doc = parse_file(path)
    assert doc.pages == 0
    got = [(e.kind, e.page, e.section, e.text) for e in doc.elements]
    assert got == [
        ("text", None, None, "Home"),
        ("title", None, "Garden guide", "Garden guide"),
        ("text", None, "Garden guide", "Water the tomatoes every morning.\nNever at noon."),
        ("title", None, "Pests", "Pests"),
        ("list", None, "Pests", "Slugs: use copper tape."),
        ("list", None, "Pests", "Aphids: ladybirds help."),
        ("table", None, "Pests", "Plant | Days\nBasil | 7"),
        ("text", None, "Pests", "Loose text in a div."),
    ]


MARKDOWN = """# Setup

Install with `pip install thing` and run it.

## Usage

- first item
- second item

```
thing --help
```
"""


def test_markdown(tmp_path: Path) -> None:
    path = tmp_path / "README.markdown"
    path.write_text(MARKDOWN)
    got = [(e.kind, e.section, e.text) for e in parse_file(path).elements]
    assert got == [
        ("title", "Setup", "Setup"),
        ("text", "Setup", "Install with pip install thing and run it."),
        ("title", "Usage", "Usage"),
        ("list", "Usage", "first item"),
        ("list", "Usage", "second item"),
        ("text", "Usage", "thing --help"),
    ]


TEXT = """OPENING HOURS

The shop opens at nine on weekdays
and at ten on Saturdays.

Holidays
========

Closed on public holidays.
"""


def test_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "shop.txt"
    path.write_text(TEXT)
    doc = parse_file(path)
    got = [(e.kind, e.page, e.section, e.text) for e in doc.elements]
    assert got == [
        ("title", None, "OPENING HOURS", "OPENING HOURS"),
        (
            "text",
            None,
            "OPENING HOURS",
            "The shop opens at nine on weekdays\nand at ten on Saturdays.",
        ),
        ("title", None, "Holidays", "Holidays"),
        ("text", None, "Holidays", "Closed on public holidays."),
    ]
    assert doc.warnings == []


def test_text_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "café.txt"
    path.write_bytes("Crème brûlée costs 5 €.\n".encode("cp1252"))
    doc = parse_file(path)
    assert [e.text for e in doc.elements] == ["Crème brûlée costs 5 €."]
    assert doc.warnings == ["café.txt is not UTF-8: it was read as Windows-1252"]


# ----------------------------------------------------------------------------- offline


IN_NAMESPACE = """
import json, sys
from pathlib import Path
from localllm.documents.parse import parse_file
out = {}
for name in sys.argv[1:]:
    doc = parse_file(Path(name))
    out[Path(name).name] = [[e.page, e.kind, e.section, e.text] for e in doc.elements]
heavy = ("unstructured", "spacy", "nltk", "requests")
out["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
print(json.dumps(out))
"""


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.network_free
def test_every_format_parses_the_same_with_no_network(tmp_path: Path) -> None:
    require(_unshare_works(), "`unshare -n` needs root (or user namespaces) on this machine")
    (tmp_path / "garden.html").write_text(HTML)
    (tmp_path / "README.md").write_text(MARKDOWN)
    (tmp_path / "shop.txt").write_text(TEXT)
    files = [
        write_docx(tmp_path / "manual.docx"),
        write_pptx(tmp_path / "deck.pptx"),
        tmp_path / "garden.html",
        tmp_path / "README.md",
        tmp_path / "shop.txt",
        corpus_file("debian-faq.en.pdf"),
    ]
    result = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", IN_NAMESPACE, *map(str, files)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out.pop("imported") == [], "no NLP stack (and its downloads) and no HTTP client"
    for path in files:
        here = [[e.page, e.kind, e.section, e.text] for e in parse_file(path).elements]
        assert out[path.name] == here, f"{path.name} parses differently with no network"
        assert here
