"""Small file-system helpers every room uses."""

from __future__ import annotations

from pathlib import Path


def ensure_dir(path: Path) -> Path:
    """Create a data folder on first use and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path
