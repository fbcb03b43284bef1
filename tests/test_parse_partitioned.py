"""E-mail (.eml, .msg), EPUB, OpenDocument, RTF, Excel and CSV files, read with unstructured's
partitioners: real files written by the tests (tests/format_factory.py), the elements they give,
their tables as Markdown chunks that keep the header, bad copies refused in one clear line, and
each format's text found again by a real search after a real ingest."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from localllm.documents.chunk import chunk_document
from localllm.documents.isolated import MEMORY_MB, parse_isolated
from localllm.documents.model import DocumentError, ParsedDocument
from localllm.documents.parse import SUPPORTED_EXTENSIONS, parse_file
from localllm.services import Services
from tests.conftest import run_cli
from tests.format_factory import (
    FACTS,
    WRITERS,
    write_all,
    write_eml,
    write_epub,
    write_xlsx,
)
from tests.msg_factory import Entry, write_cfb
from tests.mutations import zip_bomb
from tests.rag_fixtures import clean_cli_env, clean_settings


def rows(doc: ParsedDocument) -> list[tuple[str, int | None, str | None, str]]:
    return [(e.kind, e.page, e.section, e.text) for e in doc.elements]


def test_every_format_is_supported() -> None:
    assert set(WRITERS) <= SUPPORTED_EXTENSIONS


def test_eml(tmp_path: Path) -> None:
    doc = parse_file(write_eml(tmp_path / "freight.eml"))
    subject = "Quarterly freight costs"
    headers = (
        "From: Ana Ruiz <ana@example.org>\nTo: Freight team <team@example.org>\n"
        "Cc: dan@example.org\nDate: Tue, 02 Dec 2025 09:30:00 +0000"
    )
    assert doc.pages == 0
    assert rows(doc) == [
        ("title", None, subject, subject),
        ("text", None, subject, headers),
        ("text", None, subject, "Hello team,"),  # the HTML body, preferred to the plain one
        ("text", None, subject, FACTS[".eml"]),
        ("list", None, subject, "Book ships earlier"),
    ]
    assert doc.warnings == [
        "freight.eml: 1 attachment was not indexed (costs.csv): save and add them as files"
    ]


def test_msg(tmp_path: Path) -> None:
    doc = parse_file(WRITERS[".msg"](tmp_path / "recall.msg"))
    subject = "Pallet recall"
    assert rows(doc) == [
        ("title", None, subject, subject),
        (
            "text",
            None,
            subject,
            'From: "Bo Chen" <bo@example.org>\nTo: ana@example.org, dan@example.org',
        ),
        ("text", None, subject, FACTS[".msg"]),
    ]
    assert doc.warnings == [
        "recall.msg: 1 attachment was not indexed (pallets.txt): save and add them as files"
    ]


def test_epub(tmp_path: Path) -> None:
    doc = parse_file(write_epub(tmp_path / "keeper.epub"))
    assert rows(doc) == [
        ("title", None, "The Light", "The Light"),
        ("text", None, "The Light", "Every evening the keeper climbed the ninety steps."),
        ("text", None, "The Light", FACTS[".epub"]),
        ("title", None, "The Fog", "The Fog"),
        ("text", None, "The Fog", "Fog came in from the west and stayed for a week."),
    ]


def test_epub_with_obfuscated_fonts_only_is_read(tmp_path: Path) -> None:
    fonts = _encryption_xml("OEBPS/fonts/serif.otf")
    assert FACTS[".epub"] in [
        e.text for e in parse_file(write_epub(tmp_path / "f.epub", fonts)).elements
    ]


def test_odt(tmp_path: Path) -> None:
    doc = parse_file(WRITERS[".odt"](tmp_path / "harbour.odt"))
    first, second = "Harbour rules", "Tugs"
    assert rows(doc) == [
        ("title", None, first, first),
        ("text", None, first, FACTS[".odt"]),
        ("title", None, second, second),
        ("list", None, second, "two tugs for a tanker"),
        ("list", None, second, "one tug for a ferry"),
        ("table", None, second, "| Vessel | Tugs |\n| --- | --- |\n| Tanker | 2 |\n| Ferry | 1 |"),
    ]


def test_rtf(tmp_path: Path) -> None:
    doc = parse_file(WRITERS[".rtf"](tmp_path / "storage.rtf"))
    assert [e.text for e in doc.elements] == [
        "Storage notes",
        FACTS[".rtf"],
        "Forklifts charge overnight in bay three.",
    ]


def test_xlsx_sheets_are_pages_and_sections(tmp_path: Path) -> None:
    doc = parse_file(write_xlsx(tmp_path / "census.xlsx"))
    assert doc.pages == 2
    assert rows(doc) == [
        ("text", 1, "Census", "Wildlife census 2025"),
        (
            "table",
            1,
            "Census",
            "| Animal | Count | Site |\n| --- | --- | --- |\n"
            "| Okapi | 14 | Kisangani |\n| Bonobo | 31 | Lomako |",
        ),
        ("table", 2, "Staff", "| Name | Role |\n| --- | --- |\n| Ana | Ranger |"),
    ]


def test_csv(tmp_path: Path) -> None:
    doc = parse_file(WRITERS[".csv"](tmp_path / "cities.csv"))
    assert rows(doc) == [
        (
            "table",
            None,
            None,
            "| City | Country | Altitude |\n| --- | --- | --- |\n"
            "| Quetzaltenango | Guatemala | 2330 |\n| Cusco | Peru | 3399 |",
        )
    ]


def test_csv_in_windows_1252_with_a_pipe_in_a_cell(tmp_path: Path) -> None:
    path = tmp_path / "prix.csv"
    path.write_bytes("Plat;Prix\nCrème brûlée;5 €\nA|B;3 €\n".encode("cp1252"))
    doc = parse_file(path)
    assert [e.text for e in doc.elements] == [
        "| Plat | Prix |\n| --- | --- |\n| Crème brûlée | 5 € |\n| A\\|B | 3 € |"
    ]
    assert doc.warnings == ["prix.csv is not UTF-8: it was read as Windows-1252"]


def words(text: str) -> int:
    return len(text.split())


def test_a_long_sheet_is_chunked_between_rows_under_its_header(tmp_path: Path) -> None:
    doc = parse_file(write_xlsx(tmp_path / "long.xlsx", rows=300))
    chunks = [c for c in chunk_document(doc, words, max_tokens=120) if c.section == "Census"]
    header = "| Animal | Count | Site |\n| --- | --- | --- |"
    tables = [c for c in chunks if "| --- |" in c.text]
    assert len(tables) > 10
    body: list[str] = []
    for chunk in tables:
        assert words(chunk.text) <= 120 and chunk.pages == [1]
        table = chunk.text[chunk.text.index("| Animal") :]
        assert table.startswith(header + "\n| "), chunk.text[:200]
        body.extend(table.split("\n")[2:])
    assert body[:2] == ["| Okapi | 14 | Kisangani |", "| Bonobo | 31 | Lomako |"]
    assert body[2:] == [f"| Species {i} | {i} | Site {i % 7} |" for i in range(300)], (
        "rows kept, in order"
    )


# ------------------------------------------------------------------------------- bad copies


def _encryption_xml(uri: str) -> str:
    return (
        '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
        'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
        f'<enc:CipherReference URI="{uri}"/></enc:CipherData></enc:EncryptedData></encryption>'
    )


def _cut(path: Path, keep: float) -> bytes:
    data = path.read_bytes()
    return data[: int(len(data) * keep)]


def _locked_odt(good: Path) -> bytes:
    """The .odt as LibreOffice saves it with a password: its manifest gives each encrypted part
    its encryption data (algorithm, key derivation)."""
    source = zipfile.ZipFile(good)
    out = io.BytesIO()
    entry = re.compile(rb'(<manifest:file-entry [^>]*full-path="content.xml"[^>]*?)\s*/>')
    locked = (
        rb'\1><manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="x">'
        rb'<manifest:algorithm manifest:algorithm-name="Blowfish CFB" manifest:initialisation-vector="x"/>'
        rb"</manifest:encryption-data></manifest:file-entry>"
    )
    with zipfile.ZipFile(out, "w") as z:
        for part in source.namelist():
            data = source.read(part)
            if part == "META-INF/manifest.xml":
                data, count = entry.subn(locked, data)
                assert count == 1, data
            z.writestr(part, data)
    return out.getvalue()


def _bad_copies(good: dict[str, Path], folder: Path) -> Iterator[tuple[str, bytes, str]]:
    """(file name, bytes, what the refusal must say)."""
    for suffix in WRITERS:
        yield f"empty{suffix}", b"", "the file is empty (0 bytes)"
    yield (
        "text.xlsx",
        b"Name,Role\nAna,Ranger\n",
        "not an Excel .xlsx workbook (a .xlsx file is a ZIP",
    )
    yield "cut.xlsx", _cut(good[".xlsx"], 0.5), "its ZIP structure is damaged or incomplete"
    yield "cut.epub", _cut(good[".epub"], 0.5), "can't be read as an EPUB e-book"
    yield "cut.odt", _cut(good[".odt"], 0.9), "can't be read as an OpenDocument .odt text"
    yield "cut.msg", _cut(good[".msg"], 0.5), "can't be read as an Outlook .msg message"
    yield "cut.rtf", _cut(good[".rtf"], 0.4), "can't be read as an RTF document"
    no_body = write_eml(folder / "no-body.eml", body=False).read_bytes()
    yield "no-body.eml", no_body, "no body text to index (its attachments are not read: costs.csv)"
    yield "notes.eml", b"just some notes\nabout things\n", "not an e-mail message"
    yield "report.eml", good[".epub"].read_bytes(), "not a .eml text file: it is a ZIP archive"
    locked = write_cfb(
        folder / "locked",
        [
            Entry("EncryptionInfo", 2, b"\x04\x00\x04\x00" + bytes(200)),
            Entry("EncryptedPackage", 2, bytes(5000)),
        ],
    ).read_bytes()
    yield "locked.xlsx", locked, "the Excel .xlsx workbook is password-protected"
    yield (
        "locked.odt",
        _locked_odt(good[".odt"]),
        "the OpenDocument .odt text is password-protected",
    )
    drm = write_epub(folder / "drm", _encryption_xml("OEBPS/c1.xhtml")).read_bytes()
    yield "drm.epub", drm, "DRM-protected"
    word = folder / "word.docx"
    import docx

    document = docx.Document()
    document.add_paragraph("A letter.")
    document.save(str(word))
    yield "letter.xlsx", word.read_bytes(), "the archive has no xl/workbook.xml"
    other = write_cfb(folder / "other", [Entry("WordDocument", 2, b"x" * 100)]).read_bytes()
    yield "old.msg", other, "not an Outlook message"
    yield "mail.msg", good[".eml"].read_bytes(), "not an Outlook .msg message"
    yield (
        "notes.rtf",
        b"Cold storage notes\n",
        "not an RTF document (it does not start with {\\rtf)",
    )
    yield "blank.csv", b"\n\n,,\n", "there is no text in it to index"
    yield "data.csv", b"\x00\x01\x02" * 50, "binary data"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def bad(good: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("bad")
    made = tmp_path_factory.mktemp("made")
    out = []
    for name, data, says in _bad_copies(good, made):
        path = folder / name
        path.write_bytes(data)
        out.append((path, says))
    return out


def refusal(path: Path) -> str:
    with pytest.raises(DocumentError) as caught:
        parse_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path.name}: "), message
    assert "\n" not in message and "Traceback" not in message, message
    assert str(path.parent) not in message, f"a path leaked: {message}"
    return message


def test_bad_copies_are_refused_in_one_clear_line(bad: list[tuple[Path, str]]) -> None:
    for path, says in bad:
        message = refusal(path)
        assert says in message, (path.name, message)


@pytest.mark.parametrize(
    ("suffix", "part"),
    [(".xlsx", "xl/worksheets/sheet1.xml"), (".epub", "OEBPS/c1.xhtml"), (".odt", "content.xml")],
)
def test_zip_bombs_are_refused_unopened(
    good: dict[str, Path], tmp_path: Path, suffix: str, part: str
) -> None:
    path = tmp_path / f"bomb{suffix}"
    path.write_bytes(zip_bomb(good[suffix].read_bytes(), part, size=256 << 20))
    assert "refused without unpacking it" in refusal(path)


def test_the_isolated_worker_reads_and_refuses_them(
    good: dict[str, Path], bad: list[tuple[Path, str]]
) -> None:
    for suffix, path in good.items():
        assert [e.text for e in parse_isolated(path).elements] == [
            e.text for e in parse_file(path).elements
        ], suffix
    for path, says in bad:
        with pytest.raises(DocumentError, match=re.escape(says)):
            parse_isolated(path)


# ------------------------------------------------------------------------- a real search


@pytest.fixture(scope="module")
def services(
    good: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, shared_cache: Path
) -> Iterator[Services]:
    services = Services(clean_settings(tmp_path_factory.mktemp("store"), shared_cache))
    report = services.ingestor().ingest(list(good.values()), "formats")
    assert [r.status for r in report.results] == ["added"] * len(good), report.to_dict()
    yield services
    services.close()


QUERIES = {
    ".eml": ("how much did freight to Rotterdam rise", "twelve percent"),
    ".msg": ("which pallets must be recalled", "blue pallets"),
    ".epub": ("how many ships did the lighthouse keeper count", "forty ships"),
    ".odt": ("where does the harbour pilot board the tanker", "outer buoy"),
    ".rtf": ("temperature of cold storage in Lisbon", "minus eighteen"),
    ".xlsx": ("how many okapi were counted in the wildlife census", "| Okapi | 14 | Kisangani |"),
    ".csv": ("altitude of Quetzaltenango", "| Quetzaltenango | Guatemala | 2330 |"),
}


@pytest.mark.parametrize("suffix", list(QUERIES))
def test_search_finds_each_format(services: Services, suffix: str) -> None:
    query, expected = QUERIES[suffix]
    hits = services.retriever().search(query, "formats", k=3).hits
    assert hits and hits[0].file == f"sample{suffix}", [(h.file, h.chunk.text[:60]) for h in hits]
    assert expected in hits[0].chunk.text
    if suffix == ".xlsx":
        assert hits[0].chunk.section == "Census" and hits[0].chunk.pages == [1]
        assert "| Animal | Count | Site |\n| --- | --- | --- |\n| Okapi" in hits[0].chunk.text


def test_cli_refuses_bad_copies_and_keeps_what_is_stored(
    good: dict[str, Path], bad: list[tuple[Path, str]], tmp_path: Path, shared_cache: Path
) -> None:
    env = clean_cli_env(tmp_path, shared_cache)
    first = run_cli("ingest", str(good[".xlsx"]), "--json", env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sample.xlsx").write_bytes(b"Name,Role\nAna,Ranger\n")  # same name, now text
    for path, _ in bad:
        (broken / path.name).write_bytes(path.read_bytes())
    second = run_cli("ingest", *map(str, sorted(broken.iterdir())), "--json", env=env, timeout=300)
    assert "Traceback" not in second.stderr
    files = json.loads(second.stdout)["files"]
    assert files and all(f["status"] == "failed" for f in files), files
    for f in files:
        assert f["error"].startswith(f"{f['name']}: ") and "\n" not in f["error"], f
    found = run_cli("search", "okapi census", "--json", env=env, timeout=180)
    assert found.returncode == 0, found.stderr
    hit = json.loads(found.stdout)[0]
    assert hit["file"] == "sample.xlsx" and "| Okapi | 14 | Kisangani |" in hit["text"]


FAKE_PANDOC = """#!/bin/sh
case "$1" in
  --version) echo "pandoc 3.9"; exit 0 ;;
  --list-input-formats) printf 'rtf\\nepub\\nodt\\nhtml\\n'; exit 0 ;;
  --list-output-formats) printf 'html\\ndocx\\n'; exit 0 ;;
esac
echo $$ > "$PANDOC_PID_FILE"
exec sleep 300
"""


def test_a_hung_pandoc_is_stopped_with_the_worker(
    good: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "pandoc"
    fake.write_text(FAKE_PANDOC)
    fake.chmod(0o755)
    pid_file = tmp_path / "pandoc.pid"
    monkeypatch.setenv("PYPANDOC_PANDOC", str(fake))  # the worker started below inherits these
    monkeypatch.setenv("PANDOC_PID_FILE", str(pid_file))
    with pytest.raises(DocumentError, match="made no progress for 3 s"):
        # a memory limit of its own: a new worker, with this environment
        parse_isolated(good[".rtf"], stall_seconds=3, memory_mb=MEMORY_MB + 1)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "pandoc outlived the stopped worker"
