"""Real files of the formats read through unstructured, written by the tests with the libraries
that make them (the e-mail package, openpyxl, pandoc) or by hand where the format is that simple
(EPUB's ZIP of XHTML, RTF). Each carries one sentence a search must find: FACTS[suffix]."""

from __future__ import annotations

import zipfile
from email.message import EmailMessage
from pathlib import Path

from tests.corpus import one_page_pdf
from tests.msg_factory import write_msg

FACTS = {
    ".eml": "The freight costs to Rotterdam rose by twelve percent in the third quarter.",
    ".msg": "Recall the blue pallets from depot seven before Friday.",
    ".epub": "The lighthouse keeper counted forty ships on the night of the storm.",
    ".odt": "The harbour pilot boards each tanker at the outer buoy.",
    ".rtf": "Cold storage at the Lisbon warehouse stays at minus eighteen degrees.",
    ".xlsx": "Okapi",  # a cell: the sheet row | Okapi | 14 | Kisangani |
    ".csv": "Quetzaltenango",
}


def write_eml(path: Path, *, body: bool = True, attachment: bool = True) -> Path:
    message = EmailMessage()
    message["From"] = "Ana Ruiz <ana@example.org>"
    message["To"] = "Freight team <team@example.org>"
    message["Cc"] = "dan@example.org"
    message["Subject"] = "Quarterly freight costs"
    message["Date"] = "Tue, 02 Dec 2025 09:30:00 +0000"
    if body:
        message.set_content(f"Hello team,\n\n{FACTS['.eml']}\n\nRegards,\nAna\n")
        message.add_alternative(
            "<html><body><p>Hello team,</p>"
            f"<p>{FACTS['.eml'].replace('Rotterdam', '<b>Rotterdam</b>')}</p>"
            "<ul><li>Book ships earlier</li></ul></body></html>",
            subtype="html",
        )
    if attachment:
        message.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="costs.csv")
    path.write_bytes(bytes(message))
    return path


def write_outlook_msg(path: Path) -> Path:
    return write_msg(
        path,
        subject="Pallet recall",
        sender='"Bo Chen" <bo@example.org>',
        to=["ana@example.org", "dan@example.org"],
        body=f"Hello,\n\n{FACTS['.msg']}\n\nBo",
        html=f"<html><body><p>{FACTS['.msg']}</p></body></html>",
        attachments={"pallets.txt": b"pallet 1\npallet 2\n"},
    )


_CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>
</rootfiles></container>"""
_OPF = """<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">urn:uuid:1</dc:identifier>
<dc:title>The Keeper</dc:title><dc:language>en</dc:language></metadata>
<manifest><item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
{items}</manifest><spine>{spine}</spine></package>"""
_NAV = """<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops"><head>
<title>Contents</title></head><body><nav epub:type="toc"><ol>{links}</ol></nav></body></html>"""
_CHAPTER = """<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>{title}</title></head>
<body><h1>{title}</h1>{paragraphs}</body></html>"""
CHAPTERS = [
    ("The Light", ["Every evening the keeper climbed the ninety steps.", FACTS[".epub"]]),
    ("The Fog", ["Fog came in from the west and stayed for a week."]),
]


def write_epub(path: Path, encryption_xml: str | None = None) -> Path:
    """An EPUB 3 book of two chapters, as the specification lays one out."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")  # first, stored
        z.writestr("META-INF/container.xml", _CONTAINER, zipfile.ZIP_DEFLATED)
        if encryption_xml is not None:
            z.writestr("META-INF/encryption.xml", encryption_xml, zipfile.ZIP_DEFLATED)
        items, spine, links = [], [], []
        for i, (title, paragraphs) in enumerate(CHAPTERS, 1):
            items.append(f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>')
            spine.append(f'<itemref idref="c{i}"/>')
            links.append(f'<li><a href="c{i}.xhtml">{title}</a></li>')
            body = "".join(f"<p>{p}</p>" for p in paragraphs)
            chapter = _CHAPTER.format(title=title, paragraphs=body)
            z.writestr(f"OEBPS/c{i}.xhtml", chapter, zipfile.ZIP_DEFLATED)
        opf = _OPF.format(items="".join(items), spine="".join(spine))
        z.writestr("OEBPS/content.opf", opf, zipfile.ZIP_DEFLATED)
        z.writestr("OEBPS/nav.xhtml", _NAV.format(links="".join(links)), zipfile.ZIP_DEFLATED)
    return path


ODT_MARKDOWN = f"""# Harbour rules

{FACTS[".odt"]}

## Tugs

- two tugs for a tanker
- one tug for a ferry

| Vessel | Tugs |
|--------|------|
| Tanker | 2    |
| Ferry  | 1    |
"""


def write_odt(path: Path) -> Path:
    """An OpenDocument text written by pandoc (as LibreOffice would: content.xml in a ZIP)."""
    import pypandoc

    pypandoc.convert_text(ODT_MARKDOWN, "odt", format="md", outputfile=str(path))
    return path


def write_rtf(path: Path) -> Path:
    rtf = (
        r"{\rtf1\ansi\deff0{\fonttbl{\f0 Times New Roman;}}"
        r"{\pard\b\fs32 Storage notes\par}"
        "{\\pard " + FACTS[".rtf"] + r"\par}"
        r"{\pard Forklifts charge overnight in bay three.\par}}"
    )
    path.write_text(rtf, encoding="ascii")
    return path


ANIMALS = [("Animal", "Count", "Site"), ("Okapi", 14, "Kisangani"), ("Bonobo", 31, "Lomako")]


def write_xlsx(path: Path, rows: int = 0) -> Path:
    """Two sheets: 'Census' (a caption cell, a blank row, a table; `rows` more rows if asked)
    and 'Staff'."""
    import openpyxl

    book = openpyxl.Workbook()
    census = book.active
    census.title = "Census"
    census.append(["Wildlife census 2025"])
    census.append([])
    for row in ANIMALS:
        census.append(list(row))
    for i in range(rows):
        census.append([f"Species {i}", i, f"Site {i % 7}"])
    staff = book.create_sheet("Staff")
    staff.append(["Name", "Role"])
    staff.append(["Ana", "Ranger"])
    book.save(str(path))
    return path


def write_csv(path: Path) -> Path:
    path.write_text("City,Country,Altitude\nQuetzaltenango,Guatemala,2330\nCusco,Peru,3399\n")
    return path


WRITERS = {
    ".eml": write_eml,
    ".msg": write_outlook_msg,
    ".epub": write_epub,
    ".odt": write_odt,
    ".rtf": write_rtf,
    ".xlsx": write_xlsx,
    ".csv": write_csv,
}


def write_all(folder: Path) -> dict[str, Path]:
    """One file of each format in `folder`, by suffix."""
    return {suffix: write(folder / f"sample{suffix}") for suffix, write in WRITERS.items()}


def write_table_pdf(path: Path, cells: list[list[str]], *, ruled: bool = True) -> Path:
    """A one-page PDF (US Letter): a paragraph, a table of `cells` drawn with rules (a grid of
    lines, 150 x 20 points a cell, its top-left at (72, 150) from the page's top-left), and a
    paragraph below it. With `ruled` False the same text stands in columns with no lines."""
    top, width, height = 792 - 150, 150, 20
    ops = ["BT /F1 11 Tf 72 700 Td (Census of the northern reserve, counted in spring.) Tj ET"]
    rows, columns = len(cells), len(cells[0])
    if ruled:
        ops.append("0.5 w")
        for r in range(rows + 1):
            y = top - r * height
            ops.append(f"72 {y} m {72 + columns * width} {y} l S")
        for c in range(columns + 1):
            x = 72 + c * width
            ops.append(f"{x} {top} m {x} {top - rows * height} l S")
    for r, row in enumerate(cells):
        for c, text in enumerate(row):
            x, y = 72 + c * width + 5, top - (r + 1) * height + 6
            ops.append(f"BT /F1 11 Tf {x} {y} Td ({text}) Tj ET")
    below = top - rows * height - 40
    ops.append(f"BT /F1 11 Tf 72 {below} Td (The okapi count rose for the third year.) Tj ET")
    content = "\n".join(ops).encode("latin-1")
    path.write_bytes(one_page_pdf(content))
    return path
