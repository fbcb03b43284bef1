"""OCR of page images with the tesseract program (Debian package tesseract-ocr), where installed.

tesseract is run directly rather than through pytesseract: pytesseract hands the child this process's
own environment, and tesseract needs OMP_THREAD_LIMIT=1 (with OpenMP threads it was 4x slower on two
cores), which must not be set on this process, where it would also cap llama.cpp and torch.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from typing import TYPE_CHECKING

from localllm.documents.model import BBox

if TYPE_CHECKING:
    from PIL import Image

OCR_LANGUAGE = "eng"
OCR_TIMEOUT_S = 300
_MIN_CONFIDENCE = 40  # a paragraph tesseract is less sure of than this is noise read off a picture


class OCRError(Exception):
    """tesseract is missing or failed on an image; the message says which."""


def tesseract_path() -> str | None:
    return shutil.which("tesseract")


def ocr_image(image: Image.Image, *, dpi: int = 300) -> list[tuple[str, BBox]]:
    """Paragraphs read off `image`, each with its box in the image's pixels (top-left origin)."""
    exe = tesseract_path()
    if exe is None:
        raise OCRError("tesseract is not installed (apt-get install tesseract-ocr)")
    buffer = io.BytesIO()
    image.convert("L").save(buffer, format="PPM")  # uncompressed: 10x cheaper to write than PNG
    command = [exe, "stdin", "stdout", "-l", OCR_LANGUAGE, "--dpi", str(dpi), "tsv"]
    try:
        done = subprocess.run(
            command,
            input=buffer.getvalue(),
            capture_output=True,
            timeout=OCR_TIMEOUT_S,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise OCRError(f"tesseract took more than {OCR_TIMEOUT_S} s on one page") from e
    except OSError as e:
        raise OCRError(f"tesseract could not be started: {e}") from e
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise OCRError(f"tesseract failed: {detail[-1] if detail else f'exit {done.returncode}'}")
    return _paragraphs(done.stdout.decode("utf-8", errors="replace"))


def _paragraphs(tsv: str) -> list[tuple[str, BBox]]:
    # Columns: level page block par line word left top width height conf text; level 5 is a word.
    paragraphs: dict[tuple[str, str], list[list[str]]] = {}
    for row in csv.reader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        if len(row) == 12 and row[0] == "5" and row[11].strip():
            paragraphs.setdefault((row[2], row[3]), []).append(row)
    found = []
    for words in paragraphs.values():
        if sum(float(w[10]) for w in words) / len(words) < _MIN_CONFIDENCE:
            continue
        lines: dict[str, list[str]] = {}
        for w in words:
            lines.setdefault(w[4], []).append(w[11].strip())
        text = "\n".join(" ".join(line) for line in lines.values())
        left = [int(w[6]) for w in words]
        top = [int(w[7]) for w in words]
        right = [int(w[6]) + int(w[8]) for w in words]
        bottom = [int(w[7]) + int(w[9]) for w in words]
        found.append(
            (text, (float(min(left)), float(min(top)), float(max(right)), float(max(bottom))))
        )
    return found
