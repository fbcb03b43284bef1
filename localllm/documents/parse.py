"""A user's file -> ParsedDocument: text elements in reading order with page, box and section.

PDFs are read with PDFium (fast, and OCR for scanned pages where tesseract is installed); Word,
PowerPoint, HTML, Markdown and plain text by small readers of our own (office.py, markup.py).
Every file that can't be indexed raises DocumentError with a message that starts with its name.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from localllm.documents import markup, office
from localllm.documents.model import DocumentError, Element, ParsedDocument
from localllm.documents.ocr import tesseract_path

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".pdf", ".docx", ".pptx", ".html", ".htm", ".md", ".markdown", ".txt"}
)
OCR_HINT = "OCR is not available (apt-get install tesseract-ocr)"

# Word and PowerPoint files are ZIP archives whose parts their readers unpack into memory: an archive
# that unpacks past MAX_UNPACKED, or a part that unpacks to over MAX_RATIO times its packed size
# (and past RATIO_FLOOR), is a zip bomb, refused before anything is unpacked.
MAX_UNPACKED = 2 << 30
MAX_RATIO = 100
RATIO_FLOOR = 64 << 20

_EXECUTABLE_MAGIC = (
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
)
_OTHER_FORMATS = {
    b"%PDF-": "a PDF",
    b"PK\x03\x04": "a ZIP archive (a Word, PowerPoint or other Office file is one)",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "an old Office 97-2003 file (.doc/.ppt/.xls); save it as .docx or .pptx",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
}


class ParseCancelled(Exception):
    """should_stop() asked to stop; nothing of the document was kept."""


def ocr_available() -> bool:
    """True where scanned PDF pages can be read: the tesseract program is installed."""
    return tesseract_path() is not None


def parse_file(
    path: Path,
    *,
    name: str | None = None,
    ocr: bool = True,
    on_page: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ParsedDocument:
    """Read one file into elements with provenance; raise DocumentError if it can't be indexed.

    on_page(done, total) is called after each PDF page; should_stop() is checked before each one and
    ParseCancelled raised when it returns True.
    """
    path = Path(path)
    name = name or path.name
    suffix = (path.suffix or Path(name).suffix).lower()  # an upload's temp file may have none
    if suffix not in SUPPORTED_EXTENSIONS:
        kinds = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        what = f"'{suffix}' files" if suffix else "files without an extension"
        raise DocumentError(f"{name}: {what} are not supported (supported: {kinds})")
    sha256, head = _hash_and_head(path, name)
    _check_content(name, suffix, head)
    if suffix == ".pdf":
        return _parse_pdf(path, name, sha256, ocr=ocr, on_page=on_page, should_stop=should_stop)
    warnings: list[str] = []
    if suffix in (".docx", ".pptx"):
        _check_archive(path, name, suffix)
    try:
        if suffix == ".docx":
            elements, pages = office.read_docx(path)
        elif suffix == ".pptx":
            elements, pages = office.read_pptx(path)
        else:
            text, encoding = markup.decode(path.read_bytes(), suffix)
            if encoding == "Windows-1252":  # a guess, not a declared encoding
                warnings.append(f"{name} is not UTF-8: it was read as Windows-1252")
            elements, pages = markup.read_markup(text, suffix), 0
    except Exception as e:  # a damaged file fails deep inside its reader: say so, not a traceback
        raise DocumentError(f"{name}: {_explain(suffix, e)}") from e
    if not elements:
        raise DocumentError(f"{name}: there is no text in it to index")
    return ParsedDocument(str(path), name, sha256, pages, elements, warnings)


def _hash_and_head(path: Path, name: str) -> tuple[str, bytes]:
    """The file's SHA-256, streamed, and its first 1 KiB for sniffing the format."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            head = f.read(1024)
            digest.update(head)
            while block := f.read(1 << 20):
                digest.update(block)
    except FileNotFoundError as e:
        raise DocumentError(f"{name}: the file does not exist") from e
    except IsADirectoryError as e:
        raise DocumentError(f"{name}: this is a folder, not a file") from e
    except PermissionError as e:
        raise DocumentError(f"{name}: no permission to read the file") from e
    except OSError as e:
        raise DocumentError(f"{name}: the file can't be read ({e.strerror or e})") from e
    if not head:
        raise DocumentError(f"{name}: the file is empty (0 bytes)")
    return digest.hexdigest(), head


def _check_content(name: str, suffix: str, head: bytes) -> None:
    """Refuse a file whose first bytes show it is not what its extension says."""
    if head.startswith(_EXECUTABLE_MAGIC) or (head.startswith(b"MZ") and b"\0" in head):
        raise DocumentError(f"{name}: looks like an executable program, not a {suffix} document")
    actual = next((what for magic, what in _OTHER_FORMATS.items() if head.startswith(magic)), None)
    if suffix == ".pdf":
        if b"%PDF-" not in head:  # readers accept a little junk before the header
            raise DocumentError(f"{name}: not a PDF ({actual or 'it does not start with %PDF-'})")
    elif suffix in (".docx", ".pptx"):
        if not head.startswith(b"PK\x03\x04"):
            kind = "Word" if suffix == ".docx" else "PowerPoint"
            detail = actual or f"a {suffix} file is a ZIP archive and this is not one"
            raise DocumentError(f"{name}: not a {kind} {suffix} file ({detail})")
    elif actual is not None:
        raise DocumentError(f"{name}: not a {suffix} text file: it is {actual}")
    elif b"\0" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DocumentError(f"{name}: not a {suffix} text file: it holds binary data")


def _check_archive(path: Path, name: str, suffix: str) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DocumentError(f"{name}: {_explain(suffix, e)}") from e
    unpacked = sum(p.file_size for p in parts)
    bomb = any(p.file_size > max(RATIO_FLOOR, MAX_RATIO * p.compress_size) for p in parts)
    if unpacked > MAX_UNPACKED or bomb:
        packed = path.stat().st_size
        raise DocumentError(
            f"{name}: unpacks to {unpacked / (1 << 20):,.0f} MB from {packed / (1 << 20):,.1f} MB "
            "(a zip bomb, or damaged): refused without unpacking it"
        )


def _detail(error: Exception) -> str:
    return str(error).strip() or type(error).__name__


def _explain(suffix: str, error: Exception) -> str:
    if isinstance(error, MemoryError):
        return "reading it needs more memory than the app may use: split it into smaller files"
    detail = _detail(error)
    if isinstance(error, zipfile.BadZipFile) or type(error).__name__ == "PackageNotFoundError":
        detail = "its ZIP structure is damaged or incomplete: a cut-off copy?"
    if suffix in (".docx", ".pptx"):
        kind = "Word" if suffix == ".docx" else "PowerPoint"
        return f"can't be read as a {kind} {suffix} file; it may be damaged ({detail})"
    return f"can't be read as {suffix} ({detail})"


def _parse_pdf(
    path: Path,
    name: str,
    sha256: str,
    *,
    ocr: bool,
    on_page: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> ParsedDocument:
    from localllm.documents import pdf as pdf_reader  # pypdfium2 loads only when a PDF comes in

    use_ocr = ocr and ocr_available()
    elements: list[Element] = []
    scans: list[int] = []
    broken: list[int] = []
    ocr_errors: list[str] = []
    with pdf_reader.opened_pdf(path, name) as pdf:
        total = len(pdf)
        with closing(pdf_reader.read_pages(pdf, ocr=use_ocr)) as pages:
            while True:
                if should_stop is not None and should_stop():
                    raise ParseCancelled(f"{name}: parsing was cancelled")
                try:
                    page = next(pages, None)
                except Exception as e:  # a PDFium or OCR failure we did not foresee: say where
                    raise DocumentError(f"{name}: reading it failed ({_detail(e)})") from e
                if page is None:
                    break
                elements.extend(page.elements)
                if page.status == "scan":
                    scans.append(page.number)
                    if page.error:
                        ocr_errors.append(page.error)
                elif page.status == "broken":
                    broken.append(page.number)
                if on_page is not None:
                    on_page(page.number, total)
    warnings = []
    if scans:
        why = f"OCR failed ({ocr_errors[0]})" if ocr_errors else _no_ocr_reason(ocr)
        has, was = ("has", "was") if len(scans) == 1 else ("have", "were")
        warnings.append(f"{_pages(scans)} {has} no text layer and {was} skipped: {why}")
    if broken:
        is_ = "is damaged and was" if len(broken) == 1 else "are damaged and were"
        warnings.append(f"{_pages(broken)} {is_} skipped")
    if not elements:
        if scans and not broken:
            every = "its only page" if total == 1 else f"any of its {total} pages"
            why = f"OCR failed ({ocr_errors[0]})" if ocr_errors else _no_ocr_reason(ocr)
            raise DocumentError(f"{name}: no text layer on {every}, and {why}")
        raise DocumentError(f"{name}: no text found on any of its {total} pages")
    return ParsedDocument(
        str(path), name, sha256, total, elements, warnings, sorted(scans + broken)
    )


def _no_ocr_reason(ocr: bool) -> str:
    return "OCR was turned off" if not ocr else OCR_HINT


def _pages(numbers: list[int]) -> str:
    """[2, 3, 4, 6] -> 'pages 2-4, 6'."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return f"page {text}" if len(numbers) == 1 else f"pages {text}"
