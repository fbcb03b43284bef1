"""Optional PII redaction, applied to text before anything is embedded or stored.

Each detector replaces a match with a bracketed label ([EMAIL], [PHONE], ...). Card numbers must pass
the Luhn check and IBANs the mod-97 check, so ordinary long numbers (ISBNs, page ranges) survive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(raw: str) -> bool:
    iban = re.sub(r"\s", "", raw).upper()
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    numeric = "".join(str(int(c, 36)) for c in moved)
    return int(numeric) % 97 == 1


_YEARS = re.compile(r"(?:(?:19|20)\d\d\s*)+")


def _phone_ok(raw: str) -> bool:
    return 9 <= len(re.sub(r"\D", "", raw)) <= 15 and not _YEARS.fullmatch(raw)


@dataclass(frozen=True)
class Detector:
    label: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] | None = None


DETECTORS: tuple[Detector, ...] = (
    Detector("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    Detector(
        "IBAN",
        re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"),
        _iban_ok,
    ),
    Detector(
        "CARD",
        re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
        lambda m: _luhn_ok(re.sub(r"\D", "", m)),
    ),
    # US SSN, UK National Insurance number, French INSEE (NIR) number.
    Detector("NATIONAL_ID", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")),
    Detector("NATIONAL_ID", re.compile(r"\b[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")),
    Detector(
        "NATIONAL_ID",
        re.compile(r"\b[12] ?\d{2} ?(?:0[1-9]|1[0-2]) ?\d{2} ?\d{3} ?\d{3}(?: ?\d{2})?\b"),
    ),
    Detector(
        "PHONE",
        re.compile(
            r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?!\w|[ .-]\d)"
        ),
        _phone_ok,
    ),
)


def scrub(text: str) -> tuple[str, dict[str, int]]:
    """The text with PII replaced, and how many of each kind were replaced."""
    counts: dict[str, int] = {}
    for detector in DETECTORS:

        def replace(match: re.Match[str], d: Detector = detector) -> str:
            if d.valid is not None and not d.valid(match.group(0)):
                return match.group(0)
            counts[d.label] = counts.get(d.label, 0) + 1
            return f"[{d.label}]"

        text = detector.pattern.sub(replace, text)
    return text, counts
