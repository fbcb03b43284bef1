"""Hugging Face Spaces mode (detected from SPACE_ID): a public demo on shared hardware.

It caps uploads and per-session state, preloads a sample collection so the first question has
something to be grounded in, and, because a Space has a network, may fetch a bigger GGUF named by
LOCALLLM_SPACES_MODEL ("owner/repo/file.gguf").
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from localllm.config import Settings
from localllm.errors import LocalLLMError
from localllm.services import Services

log = logging.getLogger(__name__)

SAMPLE_COLLECTION = "sample"
SAMPLE_FILES = ("README.md",)
MAX_UPLOAD_MB = 20
SESSION_CAPACITY = 200


def on_spaces() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def spaces_model() -> tuple[str, str] | None:
    spec = os.environ.get("LOCALLLM_SPACES_MODEL", "").strip()
    if not spec:
        return None
    repo, _, filename = spec.rpartition("/")
    if repo.count("/") != 1 or not filename.endswith(".gguf"):
        raise LocalLLMError(f"LOCALLLM_SPACES_MODEL={spec!r} is not owner/repo/file.gguf")
    return repo, filename


def spaces_settings(settings: Settings) -> Settings:
    update: dict[str, object] = {"max_upload_mb": min(settings.max_upload_mb, MAX_UPLOAD_MB)}
    if spaces_model() is not None:
        update["allow_downloads"] = True
    return settings.model_copy(update=update)


def prepare_space(services: Services, root: Path) -> None:
    """Index the sample documents once, and fetch the configured bigger model if there is one."""
    store = services.store
    samples = [root / name for name in SAMPLE_FILES if (root / name).is_file()]
    if samples and not store.documents(SAMPLE_COLLECTION):
        report = services.ingestor().ingest(samples, SAMPLE_COLLECTION)
        for failed in report.failed:
            log.warning("sample %s not indexed: %s", failed.name, failed.error)
    wanted = spaces_model()
    if wanted is None:
        return
    from localllm.llm.download import download_gguf

    repo, filename = wanted
    try:
        info = download_gguf(services.settings, repo, filename)
    except LocalLLMError as e:
        log.warning("the Space keeps the bundled model: %s", e)
        return
    services.settings.default_model = info.name
