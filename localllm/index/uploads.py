"""Keep a copy of uploaded files inside the data folder, under safe names.

A browser upload lives in a temporary folder that goes away; the store keeps its own copy so a
citation can still open the page later. Names are reduced to their last component, so an upload
called '../../etc/passwd' lands inside the uploads folder like any other file.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from localllm.files import ensure_dir

_UNSAFE = re.compile(r"[\x00-\x1f/\\\\]")


def safe_name(name: str) -> str:
    base = Path(name.replace("\\", "/")).name
    base = _UNSAFE.sub("_", base).strip().lstrip(".")
    return base or "upload"


def keep_uploads(
    folder: Path, files: Sequence[Path], names: Sequence[str] | None = None
) -> list[Path]:
    """Copy `files` into `folder` (a fresh subfolder each, so names never collide); return the copies."""
    kept: list[Path] = []
    root = ensure_dir(folder)
    for i, source in enumerate(files):
        name = safe_name(names[i] if names else source.name)
        target_dir = ensure_dir(root / uuid.uuid4().hex[:16])
        target = target_dir / name
        shutil.copyfile(source, target)
        kept.append(target)
    return kept
