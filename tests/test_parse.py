"""parse_file on real PDFs from the shared corpus, and on bad input of every kind.

Pages and positions below were checked with an independent reader, poppler's `pdftotext -bbox`.
Word, PowerPoint, HTML, Markdown and text files: test_parse_formats.py; e-mail, EPUB, OpenDocument,
RTF, Excel and CSV files: test_parse_partitioned.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localllm.documents.model import BBox, DocumentError, Element, ParsedDocument
from localllm.documents.parse import (
    SUPPORTED_EXTENSIONS,
    ParseCancelled,
    ocr_available,
    parse_file,
)
from tests.conftest import ROOT, require
from tests.corpus import corpus_file, write_encrypted_pdf

LETTER = (612.0, 792.0)
A4 = (595.2756, 841.8898)


@pytest.fixture(scope="module")
def parsed() -> dict[str, ParsedDocument]:
    """Corpus PDFs parsed once per module, on demand: parsed_doc(parsed, name)."""
    return {}


def parsed_doc(cache: dict[str, ParsedDocument], name: str, **kwargs: bool) -> ParsedDocument:
    key = f"{name}{sorted(kwargs.items())}"
    if key not in cache:
        cache[key] = parse_file(corpus_file(name), **kwargs)
    return cache[key]


def flat(text: str) -> str:
    return " ".join(text.split())


def find(doc: ParsedDocument, sentence: str) -> list[Element]:
    return [e for e in doc.elements if sentence in flat(e.text)]


def inside(inner: BBox, outer: BBox, slack: float = 2.0) -> bool:
    return (
        outer[0] - slack <= inner[0]
        and outer[1] - slack <= inner[1]
        and inner[2] <= outer[2] + slack
        and inner[3] <= outer[3] + slack
    )


# (file, page, sentence, page size, poppler's box of one word of it: x0, top, x1, bottom)
SENTENCES = [
    (
        "R-intro.pdf",
        10,
        "R has an inbuilt help facility similar to the man facility of UNIX.",
        LETTER,
        (136.6, 391.6, 167.8, 401.3),
    ),
    (
        "developers-reference.pdf",
        37,
        "The severity of the bug report must be set to wishlist.",
        LETTER,
        (108.3, 402.4, 139.4, 415.3),
    ),
    (
        "reportlab-userguide.pdf",
        30,
        "The cursormoves function relies on the automatic movement of the text cursor",
        A4,
        (96.05, 149.31, 162.05, 157.17),
    ),
]


@pytest.mark.parametrize(("name", "page", "sentence", "size", "word"), SENTENCES)
def test_sentence_comes_back_with_its_page_and_box(
    parsed: dict[str, ParsedDocument],
    name: str,
    page: int,
    sentence: str,
    size: tuple[float, float],
    word: BBox,
) -> None:
    assert_found(parsed_doc(parsed, name), page, sentence, size, word)


def assert_found(
    doc: ParsedDocument, page: int, sentence: str, size: tuple[float, float], word: BBox
) -> Element:
    hits = find(doc, sentence)
    assert len(hits) == 1, f"{sentence!r} should be in exactly one element, got {hits}"
    element = hits[0]
    assert element.page == page
    assert element.bbox is not None
    assert inside(element.bbox, (0.0, 0.0, *size)), "the box lies on the page"
    assert inside(word, element.bbox), "the box covers where poppler sees the text"
    return element


# Poppler's box of "inbuilt" on R-intro page 10 shown turned by /Rotate 0, 90, 180 and 270.
TURNED = {
    0: (136.6, 391.6, 167.8, 401.3),
    90: (390.7, 136.6, 400.4, 167.8),
    180: (444.2, 390.7, 475.4, 400.4),
    270: (391.6, 444.2, 401.3, 475.4),
}


def test_boxes_on_rotated_pages_are_as_the_page_is_shown(tmp_path: Path) -> None:
    import pypdfium2

    source = pypdfium2.PdfDocument(corpus_file("R-intro.pdf"))
    turned = pypdfium2.PdfDocument.new()
    turned.import_pages(source, [9] * len(TURNED))
    for index, rotation in enumerate(TURNED):
        turned[index].set_rotation(rotation)
    turned.save(tmp_path / "turned.pdf")
    doc = parse_file(tmp_path / "turned.pdf")
    for page, (rotation, word) in enumerate(TURNED.items(), 1):
        [element] = [e for e in doc.elements if e.page == page and "inbuilt help" in flat(e.text)]
        assert element.bbox is not None and inside(word, element.bbox), rotation


def test_pdf_document_fields(parsed: dict[str, ParsedDocument]) -> None:
    path = corpus_file("R-intro.pdf")
    doc = parsed_doc(parsed, "R-intro.pdf")
    assert doc.name == "R-intro.pdf"
    assert doc.path == str(path)
    assert doc.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert doc.pages == 113
    assert doc.warnings == []
    assert doc.skipped_pages == []
    assert {e.page for e in doc.elements} == set(range(1, 114))
    pages = [e.page or 0 for e in doc.elements]
    assert pages == sorted(pages), "elements come in reading order, page by page"


def test_sections_come_from_the_outline(parsed: dict[str, ParsedDocument]) -> None:
    doc = parsed_doc(parsed, "R-intro.pdf")
    [heading] = [
        e for e in doc.elements if flat(e.text) == "1.7 Getting help with functions and features"
    ]
    assert heading.kind == "title"
    assert heading.page == 10
    [body] = find(doc, "R has an inbuilt help facility")
    assert body.section == "Getting help with functions and features"
    # The section carries over to the next page until the next bookmark.
    [later] = find(doc, "Try ?help.search for details and more examples.")
    assert (later.page, later.section) == (11, "Getting help with functions and features")
    [after] = find(doc, "Technically R is an expression language with a very simple syntax.")
    assert after.section == "R commands, case sensitivity, etc."


def test_blank_pages_are_neither_indexed_nor_reported(parsed: dict[str, ParsedDocument]) -> None:
    doc = parsed_doc(parsed, "debian-faq.en.pdf")  # pages 8, 12, 24... are blank on purpose
    assert doc.pages == 73
    assert doc.skipped_pages == []
    assert doc.warnings == []
    pages = {e.page for e in doc.elements}
    assert 8 not in pages and 12 not in pages
    assert 9 in pages


def test_the_2415_page_manual_parses_completely() -> None:
    progress: list[tuple[int, int]] = []
    doc = parse_file(corpus_file("fullrefman.pdf"), on_page=lambda d, t: progress.append((d, t)))
    assert doc.pages == 2415
    with_text = {e.page for e in doc.elements}
    assert with_text | set(doc.skipped_pages) == set(range(1, 2416))
    assert progress == [(n, 2415) for n in range(1, 2416)]
    cleveland = (149.7, 413.5, 189.7, 422.4)
    element = assert_found(doc, 1000, "Draw a Cleveland dot plot.", LETTER, cleveland)
    assert element.section == "dotchart"


def test_should_stop_cancels_between_pages() -> None:
    done: list[int] = []
    with pytest.raises(ParseCancelled):
        parse_file(
            corpus_file("R-intro.pdf"),
            on_page=lambda d, _t: done.append(d),
            should_stop=lambda: len(done) >= 3,
        )
    assert done == [1, 2, 3]


# ----------------------------------------------------------------------------- scanned pages


def test_ocr_reads_the_scanned_pages_too(parsed: dict[str, ParsedDocument]) -> None:
    require(ocr_available(), "OCR needs tesseract (apt-get install tesseract-ocr)")
    doc = parsed_doc(parsed, "ocrmypdf-multipage.pdf")  # page 4 has text, 1-3, 5, 6 are scans
    assert doc.pages == 6
    assert doc.skipped_pages == []
    assert doc.warnings == []
    assert {e.page for e in doc.elements} == {1, 2, 3, 4, 5, 6}
    [watson] = find(doc, "from old Miss Watson")
    assert watson.page == 1
    [face] = [e for e in find(doc, "with a plain face, on the throne of England") if e.page == 5]
    assert face.bbox is not None and inside(face.bbox, (0, 0, *LETTER))
    assert face.bbox[0] < 306 and face.bbox[1] < 150, "the left column's top paragraph"
    assert watson.section == "Chapter II"


def test_ocr_of_a_single_scanned_page() -> None:
    require(ocr_available(), "OCR needs tesseract (apt-get install tesseract-ocr)")
    doc = parse_file(corpus_file("congress.pdf"))
    assert doc.pages == 1 and doc.skipped_pages == []
    [message] = find(doc, "PRESIDENT OF THE UNITED STATES")
    assert message.page == 1
    assert message.bbox is not None and inside(message.bbox, (0, 0, 200, 304))


def test_without_ocr_scanned_pages_are_skipped_with_one_warning(
    parsed: dict[str, ParsedDocument],
) -> None:
    doc = parsed_doc(parsed, "ocrmypdf-multipage.pdf", ocr=False)
    assert doc.pages == 6
    assert doc.skipped_pages == [1, 2, 3, 5, 6]
    assert {e.page for e in doc.elements} == {4}, "the one page with a text layer is kept"
    assert doc.warnings == [
        "pages 1-3, 5-6 have no text layer and were skipped: OCR was turned off"
    ]


def test_without_ocr_a_fully_scanned_pdf_is_refused() -> None:
    with pytest.raises(DocumentError, match=r"^congress\.pdf: no text layer on its only page"):
        parse_file(corpus_file("congress.pdf"), ocr=False)


NO_TESSERACT = """
import json, sys
from pathlib import Path
from localllm.documents.model import DocumentError
from localllm.documents.parse import ocr_available, parse_file
out = {"ocr_available": ocr_available()}
doc = parse_file(Path(sys.argv[1]))
out["warnings"], out["skipped"] = doc.warnings, doc.skipped_pages
try:
    parse_file(Path(sys.argv[2]))
except DocumentError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def test_where_tesseract_is_missing_the_user_is_told_to_install_it() -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # a PATH with no tesseract
    multipage, congress = corpus_file("ocrmypdf-multipage.pdf"), corpus_file("congress.pdf")
    result = subprocess.run(
        [sys.executable, "-c", NO_TESSERACT, str(multipage), str(congress)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    hint = "OCR is not available (apt-get install tesseract-ocr)"
    assert out["ocr_available"] is False
    assert out["skipped"] == [1, 2, 3, 5, 6]
    assert out["warnings"] == [f"pages 1-3, 5-6 have no text layer and were skipped: {hint}"]
    assert out["error"] == f"congress.pdf: no text layer on its only page, and {hint}"


# ----------------------------------------------------------------------------- bad input


def refused(path: Path, *fragments: str) -> str:
    with pytest.raises(DocumentError) as caught:
        parse_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path.name}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_encrypted_pdf(tmp_path: Path) -> None:
    path = write_encrypted_pdf(tmp_path / "vault.pdf", "The vault code is 4711", "secret")
    import pypdfium2

    opened = pypdfium2.PdfDocument(path, password="secret")  # a genuine encrypted PDF
    assert "vault code" in opened[0].get_textpage().get_text_range()
    opened.close()
    refused(path, "encrypted with a password")


def test_truncated_pdf(tmp_path: Path) -> None:
    data = corpus_file("R-intro.pdf").read_bytes()
    path = tmp_path / "half.pdf"
    path.write_bytes(data[: len(data) // 2])
    refused(path, "truncated", "incomplete")


def test_damaged_pdf(tmp_path: Path) -> None:
    path = tmp_path / "scrambled.pdf"
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 64 + b"\n%%EOF\n")
    refused(path, "damaged")


def test_empty_file(tmp_path: Path) -> None:
    for suffix in (".pdf", ".docx", ".txt"):
        path = tmp_path / f"nothing{suffix}"
        path.touch()
        refused(path, "empty (0 bytes)")


def test_executable_renamed(tmp_path: Path) -> None:
    binary = Path(shutil.which("ls") or sys.executable).resolve()
    for suffix in (".pdf", ".docx", ".txt"):
        path = tmp_path / f"invoice{suffix}"
        shutil.copyfile(binary, path)
        refused(path, "looks like an executable")


def test_wrong_content_for_the_extension(tmp_path: Path) -> None:
    text = tmp_path / "notes.pdf"
    text.write_text("just some notes\n")
    refused(text, "not a PDF")
    docx = tmp_path / "letter.docx"
    docx.write_text("plain text, not a Word file\n")
    refused(docx, "not a Word .docx file")
    pdf_as_txt = tmp_path / "paper.txt"
    shutil.copyfile(corpus_file("congress.pdf"), pdf_as_txt)
    refused(pdf_as_txt, "it is a PDF")
    binary = tmp_path / "data.md"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    refused(binary, "binary data")


def test_a_word_file_renamed_pptx(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("A letter, not slides.")
    path = tmp_path / "slides.pptx"
    document.save(str(path))
    refused(path, "not a PowerPoint .pptx file: the archive has no ppt/presentation.xml")


def test_unsupported_missing_and_folder(tmp_path: Path) -> None:
    (tmp_path / "sheet.numbers").write_bytes(b"PK\x03\x04")
    refused(tmp_path / "sheet.numbers", "'.numbers' files are not supported", ".pdf", ".xlsx")
    (tmp_path / "README").write_text("hello")
    refused(tmp_path / "README", "files without an extension are not supported")
    refused(tmp_path / "gone.pdf", "does not exist")
    (tmp_path / "folder.pdf").mkdir()
    refused(tmp_path / "folder.pdf", "folder")
    assert ".pdf" in SUPPORTED_EXTENSIONS and ".numbers" not in SUPPORTED_EXTENSIONS


ODD_NAMES = [
    "my report (final) v2.pdf",
    "résumé \u2013 日本語 ✓.pdf",
    'it\'s "quoted" & $HOME;.pdf',
    "-leading-dash.pdf",
    " leading and trailing space .pdf",
]


@pytest.mark.parametrize("odd", ODD_NAMES)
def test_odd_file_names(tmp_path: Path, odd: str) -> None:
    path = tmp_path / odd
    shutil.copyfile(corpus_file("debian-faq.en.pdf"), path)
    doc = parse_file(path)
    assert doc.name == odd and doc.path == str(path)
    assert doc.pages == 73 and doc.elements
    assert parse_file(path, name="Debian FAQ").name == "Debian FAQ"
    empty = tmp_path / f"empty {odd}"
    empty.touch()
    refused(empty, "empty")
