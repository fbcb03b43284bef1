"""The shared corpus of real documents, read where it lies (never copied into the repo)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import require

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

# The padding string of the PDF standard security handler (ISO 32000-1, 7.6.3.3).
_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def corpus_file(name: str) -> Path:
    """A corpus file; skips the test where the corpus is missing (fails in CI)."""
    path = CORPUS / name
    require(path.is_file(), f"the shared corpus file {path} is missing")
    return path


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def write_encrypted_pdf(path: Path, text: str, password: str) -> Path:
    """A one-page PDF encrypted with the standard security handler (RC4, 40-bit, revision 2),
    as a PDF writer of the 1990s would make it: no viewer opens it without `password`."""
    doc_id = hashlib.md5(path.name.encode()).digest()
    permissions = -4
    user = (password.encode("latin-1") + _PAD)[:32]
    owner_key = hashlib.md5((b"owner-" + password.encode("latin-1") + _PAD)[:32]).digest()[:5]
    o_value = _rc4(owner_key, user)
    key = hashlib.md5(
        user + o_value + permissions.to_bytes(4, "little", signed=True) + doc_id
    ).digest()[:5]
    u_value = _rc4(key, _PAD)
    content = f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode("latin-1")
    stream_key = hashlib.md5(key + (4).to_bytes(3, "little") + (0).to_bytes(2, "little")).digest()
    encrypted = _rc4(stream_key[:10], content)
    encryption = b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (
        o_value.hex().encode(),
        u_value.hex().encode(),
        permissions,
    )
    trailer = b"/Encrypt 6 0 R /ID [<%s> <%s>]" % (doc_id.hex().encode(), doc_id.hex().encode())
    path.write_bytes(one_page_pdf(encrypted, [encryption], trailer))
    return path


def one_page_pdf(content: bytes, extra: Sequence[bytes] = (), trailer: bytes = b"") -> bytes:
    """A one-page PDF (Helvetica as /F1) drawing `content`; `extra` objects are numbered from 6,
    and `trailer` adds entries to the trailer dictionary."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        *extra,
    ]
    return pdf_file(objects, trailer)


def pdf_file(objects: Sequence[bytes], trailer: bytes = b"") -> bytes:
    """A PDF of these objects, numbered from 1 (the first the catalog), with its xref table;
    `trailer` adds entries to the trailer dictionary."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\n" % (
        len(objects) + 1,
        trailer + b" " if trailer else b"",
    )
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)
