"""Our Word, PowerPoint, HTML and Markdown readers against unstructured's partitioners, on the same
files: text found, elements, headings, time.

The files: two manuals of the shared corpus (the Debian FAQ, An Introduction to R) turned into
Markdown (our PDF reader's sections as headings, its paragraphs as paragraphs), pandoc's Word and
HTML renderings of that Markdown, and a deck of it (python-pptx: a slide per section, heading in
the title placeholder, paragraphs in the body); plus the small files the tests write (lists, a
table, speaker notes). "headings_found" is the share of the reference's headings that come back
as titles, "false_titles" the titles that are no heading (each one opens a wrong section). The Markdown is the reference: "recall" is the share of its words (as a multiset)
found in a reader's output, "precision" the share of the output's words that are in it (repeats
and junk lower it). unstructured runs as the app would run it: offline (offline_nlp.prepare, no
spaCy model), with language detection off. Times are the median of 3 warm runs; the first run
(imports) is reported apart.

    .venv/bin/python bench/parsers.py    # writes bench/results/parsers.json and prints a table
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from localllm.documents.parse import parse_file  # noqa: E402
from localllm.documents.partitioned import kind_of, partitioner, table_text  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
MANUALS = ["debian-faq.en.pdf", "R-intro.pdf"]
PARTITIONERS = {
    ".docx": ("docx", "partition_docx"),
    ".pptx": ("pptx", "partition_pptx"),
    ".html": ("html", "partition_html"),
    ".md": ("md", "partition_md"),
}
_WORD = re.compile(r"\w+")


def words(text: str) -> Counter[str]:
    return Counter(w.lower() for w in _WORD.findall(text))


def manual_sections(pdf: Path) -> list[tuple[str, list[str]]]:
    """(heading, paragraphs) in order: our PDF reader's sections and their text."""
    sections: list[tuple[str, list[str]]] = []
    for element in parse_file(pdf).elements:
        heading = " ".join((element.section or "").split())
        if heading and (not sections or sections[-1][0] != heading):
            sections.append((heading, []))
        if element.kind != "title" and sections:
            sections[-1][1].append(" ".join(element.text.split()))
    return sections


def write_deck(sections: list[tuple[str, list[str]]], path: Path, per_slide: int = 6) -> None:
    """A deck as people make them: a slide per section (more where it runs long), the heading in
    the title placeholder and its paragraphs in the body placeholder."""
    import pptx

    deck = pptx.Presentation()
    for heading, paragraphs in sections:
        for start in range(0, max(1, len(paragraphs)), per_slide):
            slide = deck.slides.add_slide(deck.slide_layouts[1])
            slide.shapes.title.text = heading
            body = slide.placeholders[1].text_frame
            for i, text in enumerate(paragraphs[start : start + per_slide]):
                paragraph = body.paragraphs[0] if i == 0 else body.add_paragraph()
                paragraph.text = text
    deck.save(str(path))


Sample = tuple[Path, str, list[str]]  # a file, its reference text, its headings


def make_files(folder: Path) -> list[Sample]:
    import pypandoc

    from tests.test_parse_formats import HTML, MARKDOWN, write_docx, write_pptx

    files: list[Sample] = []
    for name in MANUALS:
        sections = manual_sections(CORPUS / name)
        headings = [h for h, _ in sections]
        markdown = "\n".join(f"## {h}\n\n" + "\n\n".join(ps) + "\n" for h, ps in sections)
        stem = Path(name).stem
        source = folder / f"{stem}.md"
        source.write_text(markdown)
        files.append((source, markdown, headings))
        for suffix in (".docx", ".html"):
            out = folder / f"{stem}{suffix}"
            extra = ["--standalone"] if suffix == ".html" else []
            pypandoc.convert_file(str(source), suffix[1:], outputfile=str(out), extra_args=extra)
            files.append((out, markdown, headings))
        deck = folder / f"{stem}.pptx"
        write_deck(sections, deck)
        files.append((deck, markdown, headings))
    small = [write_docx(folder / "widget.docx"), write_pptx(folder / "deck.pptx")]
    (folder / "garden.html").write_text(HTML)
    (folder / "setup.md").write_text(MARKDOWN)
    small += [folder / "garden.html", folder / "setup.md"]
    for path in small:  # their reference: what our reader finds, which the tests check by hand
        elements = parse_file(path).elements
        text = "\n".join(e.text for e in elements)
        files.append((path, text, [e.text for e in elements if e.kind == "title"]))
    return files


def ours(path: Path) -> list[tuple[str, str]]:
    return [(e.kind, e.text) for e in parse_file(path).elements]


def theirs(path: Path) -> list[tuple[str, str]]:
    module, name = PARTITIONERS[path.suffix]
    found = partitioner(module, name)(str(path), languages=[""])
    out = []
    for item in found:
        kind = kind_of(item.category)
        text = table_text(item) if kind == "table" else str(item.text)
        if text.strip():
            out.append((kind, text))
    return out


def measure(
    read: Callable[[Path], list[tuple[str, str]]], path: Path, reference: str, headings: list[str]
) -> dict[str, Any]:
    start = time.perf_counter()
    elements = read(path)
    first = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        read(path)
        times.append(time.perf_counter() - start)
    found, expected = words("\n".join(t for _, t in elements)), words(reference)
    matched = sum((found & expected).values())
    kinds = Counter(k for k, _ in elements)
    titles = [" ".join(t.split()) for k, t in elements if k == "title"]
    expected_titles = set(headings)
    return {
        "elements": len(elements),
        "titles": kinds["title"],
        "headings_found": round(
            len(expected_titles & set(titles)) / max(1, len(expected_titles)), 3
        ),
        "false_titles": sum(t not in expected_titles for t in titles),
        "lists": kinds["list"],
        "tables": kinds["table"],
        "chars": sum(len(t) for _, t in elements),
        "recall": round(matched / max(1, sum(expected.values())), 4),
        "precision": round(matched / max(1, sum(found.values())), 4),
        "first_s": round(first, 4),
        "median_s": round(statistics.median(times), 4),
    }


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path, reference, headings in make_files(Path(tmp)):
            for reader, read in (("ours", ours), ("unstructured", theirs)):
                found = measure(read, path, reference, headings)
                row = {"file": path.name, "reader": reader, **found}
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = ROOT / "bench" / "results" / "parsers.json"
    out.write_text(json.dumps({"rows": rows}, indent=1))
    keys = ["file", "reader", "elements", "titles", "headings_found", "false_titles", "lists"]
    keys += ["tables", "chars", "recall"]
    keys += ["precision", "first_s", "median_s"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
