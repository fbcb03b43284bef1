"""Checks made before a reader sees a file: is it what its extension says, is it a zip bomb, is
it locked (a password, DRM)? Each failure is a DocumentError whose message starts with the name."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from localllm.documents.model import DocumentError

# Office, OpenDocument and EPUB files are ZIP archives whose parts their readers unpack into memory:
# an archive that unpacks past MAX_UNPACKED, or a part that unpacks to over MAX_RATIO times its
# packed size (and past RATIO_FLOOR), is a zip bomb, refused before anything is unpacked.
MAX_UNPACKED = 2 << 30
MAX_RATIO = 100
RATIO_FLOOR = 64 << 20

KINDS = {  # with the article each takes
    ".docx": "a Word .docx file",
    ".pptx": "a PowerPoint .pptx file",
    ".xlsx": "an Excel .xlsx workbook",
    ".odt": "an OpenDocument .odt text",
    ".epub": "an EPUB e-book",
    ".msg": "an Outlook .msg message",
    ".rtf": "an RTF document",
    ".eml": "an e-mail .eml message",
    ".csv": "a CSV file",
}
ZIPPED = {  # each format's archive holds this part
    ".docx": "word/document.xml",
    ".pptx": "ppt/presentation.xml",
    ".xlsx": "xl/workbook.xml",
    ".odt": "content.xml",
    ".epub": "META-INF/container.xml",
}
_OOXML = (".docx", ".pptx", ".xlsx")
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
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
    _OLE: "an old Office 97-2003 file (.doc/.ppt/.xls); save it as .docx, .pptx or .xlsx",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
}
_FONT = re.compile(r"\.(otf|ttf|woff2?)$", re.IGNORECASE)
_CIPHER_URI = re.compile(rb"""CipherReference[^>]*URI\s*=\s*["']([^"']+)["']""")
UNLOCK = "save a copy without the password and add that"


def check_content(path: Path, name: str, suffix: str, head: bytes) -> None:
    """Refuse a file whose first bytes show it is not what its extension says."""
    if head.startswith(_EXECUTABLE_MAGIC) or (head.startswith(b"MZ") and b"\0" in head):
        raise DocumentError(f"{name}: looks like an executable program, not a {suffix} document")
    actual = next((what for magic, what in _OTHER_FORMATS.items() if head.startswith(magic)), None)
    kind = KINDS.get(suffix, f"a {suffix} file")
    if suffix == ".pdf":
        if b"%PDF-" not in head:  # readers accept a little junk before the header
            raise DocumentError(f"{name}: not a PDF ({actual or 'it does not start with %PDF-'})")
    elif suffix in ZIPPED:
        if head.startswith(_OLE) and suffix in _OOXML and _encrypted_ooxml(path):
            raise DocumentError(f"{name}: {_the(kind)} is password-protected: {UNLOCK}")
        if not head.startswith(b"PK\x03\x04"):
            detail = actual or f"a {suffix} file is a ZIP archive and this is not one"
            raise DocumentError(f"{name}: not {kind} ({detail})")
    elif suffix == ".msg":
        if not head.startswith(_OLE):
            detail = actual or "every .msg is an OLE compound file and this is not one"
            raise DocumentError(f"{name}: not {kind} ({detail})")
    elif actual is not None:
        raise DocumentError(f"{name}: not a {suffix} text file: it is {actual}")
    elif b"\0" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DocumentError(f"{name}: not a {suffix} text file: it holds binary data")
    elif suffix == ".rtf" and not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{\\rtf"):
        raise DocumentError(f"{name}: not {kind} (it does not start with {{\\rtf)")


def _encrypted_ooxml(path: Path) -> bool:
    """An encrypted Word, PowerPoint or Excel file is an OLE file holding an EncryptionInfo stream."""
    import olefile

    try:
        with olefile.OleFileIO(str(path)) as ole:
            return bool(ole.exists("EncryptionInfo"))
    except Exception:  # a damaged OLE file: the plain "old Office file" message applies
        return False


def check_archive(path: Path, name: str, suffix: str) -> None:
    """Refuse a zip bomb, an archive of another format, and a locked document, unpacking only
    the small manifests that say whether it is locked."""
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
            names = {p.filename for p in parts}
            _check_size(path, name, parts)
            kind = KINDS[suffix]
            if ZIPPED[suffix] not in names:
                raise DocumentError(
                    f"{name}: not {kind}: the archive has no {ZIPPED[suffix]} "
                    "(a file of another kind, renamed?)"
                )
            if suffix == ".odt" and b"encryption-data" in _small(archive, "META-INF/manifest.xml"):
                raise DocumentError(f"{name}: {_the(kind)} is password-protected: {UNLOCK}")
            if suffix == ".epub" and _drm_protected(_small(archive, "META-INF/encryption.xml")):
                raise DocumentError(
                    f"{name}: {_the(kind)} is DRM-protected (its text is encrypted) and can't be read"
                )
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as e:
        raise DocumentError(f"{name}: {explain(suffix, e)}") from e


def _check_size(path: Path, name: str, parts: list[zipfile.ZipInfo]) -> None:
    unpacked = sum(p.file_size for p in parts)
    bomb = any(p.file_size > max(RATIO_FLOOR, MAX_RATIO * p.compress_size) for p in parts)
    if unpacked > MAX_UNPACKED or bomb:
        packed = path.stat().st_size
        raise DocumentError(
            f"{name}: unpacks to {unpacked / (1 << 20):,.0f} MB from {packed / (1 << 20):,.1f} MB "
            "(a zip bomb, or damaged): refused without unpacking it"
        )


def _small(archive: zipfile.ZipFile, part: str, limit: int = 1 << 20) -> bytes:
    """A manifest's bytes (b"" when absent); _check_size has already bounded what it unpacks to."""
    try:
        info = archive.getinfo(part)
    except KeyError:
        return b""
    if info.file_size > limit:
        return b""
    return archive.read(info)


def _drm_protected(encryption_xml: bytes) -> bool:
    """EPUB lists encrypted parts in META-INF/encryption.xml; fonts alone are only obfuscated."""
    uris = [uri.decode("utf-8", "replace") for uri in _CIPHER_URI.findall(encryption_xml)]
    return any(not _FONT.search(uri) for uri in uris)


def detail(error: Exception) -> str:
    """An exception's message on one line, at most 300 characters (pandoc's run to many lines)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def explain(suffix: str, error: Exception) -> str:
    if isinstance(error, MemoryError):
        return "reading it needs more memory than the app may use: split it into smaller files"
    why = detail(error)
    if type(error).__name__ == "UnprocessableEntityError":  # unstructured's size limits
        return f"too large to read ({why}): split it into smaller files"
    if isinstance(error, zipfile.BadZipFile) or type(error).__name__ == "PackageNotFoundError":
        why = "its ZIP structure is damaged or incomplete: a cut-off copy?"
    if suffix in KINDS:
        return f"can't be read as {KINDS[suffix]}; it may be damaged ({why})"
    return f"can't be read as {suffix} ({why})"


def _the(kind: str) -> str:
    """'an Excel .xlsx workbook' -> 'the Excel .xlsx workbook'."""
    return "the " + kind.split(" ", 1)[1]
