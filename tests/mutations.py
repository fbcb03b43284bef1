"""Damaged documents for fuzzing the parsers: hypothesis strategies over real corpus files and
office files, and hand-made hostile ones (a zip bomb, absurd page counts, deep nesting).

Shared by tests/test_robustness.py (a small sample, pass/fail) and bench/robustness.py (hundreds).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SEED_PDFS = ("congress.pdf", "ocrmypdf-multipage.pdf", "debian-faq.en.pdf", "R-intro.pdf")


@dataclass(frozen=True)
class Sample:
    name: str  # the file name it is ingested under (its suffix picks the parser)
    data: bytes
    how: str  # the mutation, for the report


def _docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Maintenance", level=1)
    for i in range(12):
        document.add_paragraph(f"Step {i}: check the valve pressure and log it in the binder.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(1, 1).text = "valve", "40 psi"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _pptx() -> bytes:
    import pptx

    deck = pptx.Presentation()
    for i in range(3):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = f"Quarter {i}"
        slide.placeholders[1].text = f"Revenue rose {i + 3} percent on the northern routes."
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


HTML = (
    b"<html><head><title>Ferries</title></head><body><h1>Timetable</h1>"
    + (b"<p>The morning ferry leaves the harbour at 7:15 on weekdays.</p>" * 20)
    + b"</body></html>"
)


def first_pages(name: str, pages: int) -> bytes:
    """The first `pages` pages of a corpus PDF, as a PDF of their own (quick to ingest)."""
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(CORPUS / name)
    part = pdfium.PdfDocument.new()
    part.import_pages(source, list(range(min(pages, len(source)))))
    out = io.BytesIO()
    part.save(out)
    return out.getvalue()


def seeds(pdfs: tuple[str, ...] = SEED_PDFS, pages: int = 0) -> list[Sample]:
    """The intact files every mutation starts from (PDFs cut to their first `pages`, when > 0)."""
    found = [
        Sample(n, first_pages(n, pages) if pages else (CORPUS / n).read_bytes(), "intact")
        for n in pdfs
        if (CORPUS / n).is_file()
    ]
    return [
        *found,
        Sample("manual.docx", _docx(), "intact"),
        Sample("deck.pptx", _pptx(), "intact"),
        Sample("ferries.html", HTML, "intact"),
        Sample("notes.md", b"# Notes\n\n" + b"The heron nests by the north pond.\n" * 30, "intact"),
    ]


def _minimal_pdf(pages_entry: bytes, extra: bytes = b"") -> bytes:
    """A PDF whose page tree is `pages_entry` (no valid xref: readers rebuild it)."""
    return (
        b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj " + pages_entry + b" endobj\n" + extra + b"trailer << /Root 1 0 R >>\n%%EOF\n"
    )


def zip_bomb(office: bytes, inner: str, size: int = 1 << 30) -> bytes:
    """The Office file `office` with its part `inner` replaced by `size` bytes of zeros (1 GiB:
    about 1 MB packed)."""
    source = zipfile.ZipFile(io.BytesIO(office))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for part in source.namelist():
            if part != inner:
                z.writestr(part, source.read(part))
        part = zipfile.ZipInfo(inner)
        part.compress_type = zipfile.ZIP_DEFLATED
        with z.open(part, "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(size // len(block)):
                f.write(block)
    return out.getvalue()


def hostile(bomb_size: int = 1 << 30) -> list[Sample]:
    """The named cases: each a file a careless user or an attacker could hand the app."""
    nested = b"[" * 50_000 + b"]" * 50_000
    return [
        Sample(
            "zero-pages.pdf", _minimal_pdf(b"<< /Type /Pages /Kids [] /Count 0 >>"), "zero pages"
        ),
        Sample(
            "absurd-count.pdf",
            _minimal_pdf(
                b"<< /Type /Pages /Kids [3 0 R] /Count 2000000000 >>",
                b"3 0 obj << /Type /Page /Parent 2 0 R >> endobj\n",
            ),
            "absurd page count",
        ),
        Sample(
            "nested.pdf",
            _minimal_pdf(b"<< /Type /Pages /Kids [] /Count 0 /Deep " + nested + b" >>"),
            "deeply nested objects",
        ),
        Sample("page.pdf", HTML, "HTML named .pdf"),
        Sample(
            "bomb.docx",
            zip_bomb(_docx(), "word/document.xml", bomb_size),
            f"zip bomb ({bomb_size >> 20} MiB)",
        ),
        Sample(
            "bomb.pptx",
            zip_bomb(_pptx(), "ppt/slides/slide1.xml", bomb_size),
            f"zip bomb ({bomb_size >> 20} MiB)",
        ),
        Sample("empty.pdf", b"", "empty"),
        Sample("program.pdf", b"\x7fELF\x02\x01\x01" + bytes(4000), "a program named .pdf"),
    ]


def _truncate(sample: Sample, fraction: float) -> Sample:
    cut = int(len(sample.data) * fraction)
    return Sample(sample.name, sample.data[:cut], f"truncated at {fraction:.0%}")


def _flip(sample: Sample, positions: list[float], value: int) -> Sample:
    data = bytearray(sample.data)
    for p in positions:
        data[int(p * (len(data) - 1))] ^= value or 1
    return Sample(sample.name, bytes(data), f"{len(positions)} bytes flipped")


def _break_xref(sample: Sample, junk: bytes) -> Sample:
    data = sample.data
    at = data.rfind(b"startxref")
    if at < 0:
        return Sample(sample.name, data + junk, "junk appended")
    return Sample(sample.name, data[: at + 10] + junk + b"\n%%EOF\n", "broken xref offset")


def _splice(sample: Sample, start: float, length: int, junk: bytes) -> Sample:
    data = sample.data
    at = int(start * len(data))
    return Sample(sample.name, data[:at] + junk + data[at + length :], f"{length} bytes replaced")


def _drop_member(sample: Sample, index: int) -> Sample:
    try:
        source = zipfile.ZipFile(io.BytesIO(sample.data))
    except zipfile.BadZipFile:
        return sample
    names = source.namelist()
    dropped = names[index % len(names)]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in names:
            if name != dropped:
                z.writestr(name, source.read(name))
    return Sample(sample.name, out.getvalue(), f"{dropped} removed")


def mutated(pool: list[Sample]) -> st.SearchStrategy[Sample]:
    """One damaged copy of a file from `pool`."""
    unit = st.floats(0.0, 1.0, allow_nan=False)
    junk = st.binary(min_size=1, max_size=64)
    source = st.sampled_from(pool)
    return st.one_of(
        st.builds(_truncate, source, unit),
        st.builds(_flip, source, st.lists(unit, min_size=1, max_size=40), st.integers(0, 255)),
        st.builds(_break_xref, source, junk),
        st.builds(_splice, source, unit, st.integers(1, 4096), junk),
        st.builds(
            _drop_member,
            st.sampled_from([s for s in pool if s.name.endswith((".docx", ".pptx"))] or pool),
            st.integers(0, 100),
        ),
    )
