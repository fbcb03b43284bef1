"""A small PDF whose pages carry their own printed numbers (/PageLabels), written by hand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.corpus import pdf_file

# Two front-matter pages numbered i, ii; the body numbered from 1: the PDF's third page is "1".
FRONT_AND_BODY = b"<< /Nums [0 << /S /r >> 2 << /S /D >>] >>"


def labelled_pdf(path: Path, pages: Sequence[str], labels: bytes | None = FRONT_AND_BODY) -> Path:
    """Write a PDF of one page per text in `pages` (Helvetica, a line per line of the text), with
    `labels` as its catalog's /PageLabels number tree (None: no labels)."""
    count = len(pages)
    first_page = 4  # objects: 1 catalog, 2 pages, 3 font, then page and contents pairs
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(count))
    catalog = b"<< /Type /Catalog /Pages 2 0 R"
    catalog += (b" /PageLabels " + labels if labels else b"") + b" >>"
    objects = [
        catalog,
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        lines = b" T* ".join(b"(%s) Tj" % _escaped(line) for line in text.splitlines())
        content = b"BT /F1 12 Tf 16 TL 72 720 Td " + lines + b" ET"
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
            b" /Resources << /Font << /F1 3 0 R >> >> >>" % (first_page + 2 * i + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    path.write_bytes(pdf_file(objects))
    return path


def _escaped(line: str) -> bytes:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")
