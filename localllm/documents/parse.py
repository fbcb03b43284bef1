"""A user's file -> ParsedDocument: text elements in reading order with page, box and section.

PDFs are read with PDFium (fast, and OCR for scanned pages where tesseract is installed); Word,
PowerPoint, HTML, Markdown and plain text by small readers of our own (office.py, markup.py), which
beat unstructured's on those (bench/README.md); e-mail, EPUB, OpenDocument, RTF, spreadsheets and
CSV with unstructured's partitioners, made offline-safe (offline_nlp.py). Every file that can't be
indexed raises DocumentError with a message that starts with its name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from localllm.documents import markup, office
from localllm.documents.model import DocumentError, Element, ParsedDocument
from localllm.documents.ocr import tesseract_path
from localllm.documents.sniff import ZIPPED, check_archive, check_content, detail, explain

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".pdf", ".docx", ".pptx", ".html", ".htm", ".md", ".markdown", ".txt"}
    | {".eml", ".msg", ".epub", ".odt", ".rtf", ".xlsx", ".csv"}
)
OCR_HINT = "OCR is not available (apt-get install tesseract-ocr)"


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
    check_content(path, name, suffix, head)
    if suffix == ".pdf":
        return _parse_pdf(path, name, sha256, ocr=ocr, on_page=on_page, should_stop=should_stop)
    if suffix in ZIPPED:
        check_archive(path, name, suffix)
    warnings: list[str] = []
    try:
        elements, pages = _read(path, name, suffix, warnings)
    except DocumentError:
        raise
    except Exception as e:  # a damaged file fails deep inside its reader: say so, not a traceback
        raise DocumentError(f"{name}: {_without_path(explain(suffix, e), path, name)}") from e
    if not elements:
        raise DocumentError(f"{name}: there is no text in it to index")
    return ParsedDocument(str(path), name, sha256, pages, elements, warnings)


def _without_path(message: str, path: Path, name: str) -> str:
    """A reader's message may quote the (temporary) path: name the file instead."""
    for where in {str(path), str(path.absolute())}:
        message = message.replace(where, name)
    return message


def _read(path: Path, name: str, suffix: str, warnings: list[str]) -> tuple[list[Element], int]:
    """The elements and page count of a file that is not a PDF; `warnings` gets what to tell."""
    if suffix == ".docx":
        return office.read_docx(path)
    if suffix == ".pptx":
        return office.read_pptx(path)
    if suffix == ".xlsx":
        from localllm.documents import sheets

        return sheets.read_xlsx(path)
    if suffix in (".eml", ".msg"):
        from localllm.documents import mail

        elements, notes = (mail.read_eml if suffix == ".eml" else mail.read_msg)(path, name)
        warnings.extend(notes)
        return elements, 0
    if suffix in (".epub", ".odt", ".rtf"):
        from localllm.documents import pandoc_formats

        return pandoc_formats.read_converted(path, suffix), 0
    text, encoding = markup.decode(path.read_bytes(), suffix)
    if encoding == "Windows-1252":  # a guess, not a declared encoding
        warnings.append(f"{name} is not UTF-8: it was read as Windows-1252")
    if suffix == ".csv":
        from localllm.documents import sheets

        return sheets.read_csv(text), 0
    return markup.read_markup(text, suffix), 0


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
    from localllm.documents.pdf_tables import TableFinder

    use_ocr = ocr and ocr_available()
    elements: list[Element] = []
    scans: list[int] = []
    broken: list[int] = []
    ocr_errors: list[str] = []
    tables = TableFinder(path)
    with pdf_reader.opened_pdf(path, name) as pdf, closing(tables):
        total = len(pdf)
        with closing(pdf_reader.read_pages(pdf, ocr=use_ocr)) as pages:
            while True:
                if should_stop is not None and should_stop():
                    raise ParseCancelled(f"{name}: parsing was cancelled")
                try:
                    page = next(pages, None)
                except Exception as e:  # a PDFium or OCR failure we did not foresee: say where
                    raise DocumentError(f"{name}: reading it failed ({detail(e)})") from e
                if page is None:
                    break
                if page.ruled:
                    page.elements = tables.with_tables(page.number, page.elements)
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
