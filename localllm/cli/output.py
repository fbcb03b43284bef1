"""What every command prints with --json: one JSON object (or list) on a line of stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def echo_stream(pieces: Iterable[str], *, quiet: bool) -> None:
    """Write an answer to stdout as it streams (unless `quiet`: --json prints it whole at the end)."""
    for piece in pieces:
        if not quiet:
            sys.stdout.write(piece)
            sys.stdout.flush()
