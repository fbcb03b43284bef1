"""Opt-in download of a GGUF from the Hugging Face Hub into the models folder.

The file lands in a hidden staging folder first and is moved into place only once it is complete and
reads as a GGUF, so an interrupted download never leaves something that looks like a model.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from localllm.config import Settings
from localllm.errors import DownloadError, DownloadsDisabledError
from localllm.files import ensure_dir
from localllm.llm.catalog import ModelInfo, describe

ProgressFn = Callable[[int, int | None], None]  # (bytes done, total bytes or None)

_STAGING_PREFIX = ".download-"


def _tqdm_reporting_to(progress: ProgressFn) -> type:
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Reporter(hf_tqdm):  # type: ignore[misc, valid-type]
        # Counted here: a disabled bar (no terminal) does not advance its own `n`.
        done = 0

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            progress(self.done, int(self.total) if self.total else None)
            return super().update(n)

    return _Reporter


def _explain(error: Exception, repo_id: str, filename: str) -> str:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, LocalEntryNotFoundError):
        return "could not reach the Hub (no network?)"
    if isinstance(error, OfflineModeIsEnabled):
        return "offline mode is on (HF_HUB_OFFLINE=1): downloads are disabled"
    if isinstance(error, GatedRepoError):
        return f"{repo_id} is gated: accept its terms on the Hub and set HF_TOKEN"
    if isinstance(error, RepositoryNotFoundError):
        return f"no repository {repo_id!r} on the Hub (or it is private)"
    if isinstance(error, RevisionNotFoundError):
        return f"{repo_id} has no such revision"
    if isinstance(error, EntryNotFoundError):
        return f"{repo_id} has no file {filename!r}"
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    lowered = text.lower()
    if any(w in lowered for w in ("connect", "resolve", "network", "name or service", "timed out")):
        return f"could not reach the Hub (no network?): {text}"
    return f"{type(error).__name__}: {text}"


def _check_reachable(endpoint: str, timeout: float = 5.0) -> None:
    """Fail fast and plainly when the Hub can't be reached (huggingface_hub retries for ~25 s)."""
    url = urlsplit(endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise DownloadError(f"could not reach the Hub at {host}:{port} (no network?): {e}") from e


@dataclass(frozen=True)
class Suggestion:
    """A chat model worth its download on a laptop: well-kept GGUF builds, Q4_K_M."""

    label: str
    repo: str
    file: str
    size: str


SUGGESTED = (
    Suggestion(
        "Qwen2.5 1.5B Instruct",
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        "1.1 GB",
    ),
    Suggestion(
        "SmolLM2 1.7B Instruct",
        "HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF",
        "smollm2-1.7b-instruct-q4_k_m.gguf",
        "1.1 GB",
    ),
    Suggestion(
        "Llama 3.2 3B Instruct",
        "bartowski/Llama-3.2-3B-Instruct-GGUF",
        "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        "2.0 GB",
    ),
    Suggestion(
        "Qwen2.5 7B Instruct",
        "bartowski/Qwen2.5-7B-Instruct-GGUF",
        "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
        "4.7 GB",
    ),
)


def download_gguf(
    settings: Settings,
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    progress: ProgressFn | None = None,
) -> ModelInfo:
    """Download `filename` from `repo_id` into the models folder and return its catalog entry."""
    if not settings.allow_downloads:
        raise DownloadsDisabledError(
            "downloads are off: LocalLLM makes no network calls unless you opt in "
            "(set LOCALLLM_ALLOW_DOWNLOADS=1 or allow_downloads = true in localllm.toml)"
        )
    repo_id, filename = repo_id.strip(), filename.strip()
    if not repo_id or "/" not in repo_id:
        raise DownloadError(f"{repo_id!r} is not a Hub repository id (expected owner/name)")
    if not filename.endswith(".gguf") or "/" in filename or filename.startswith("."):
        raise DownloadError(f"{filename!r} is not a .gguf file name at the top of the repository")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise DownloadsDisabledError("offline mode is on (HF_HUB_OFFLINE=1): unset it to download")

    from huggingface_hub import constants, hf_hub_download

    folder = ensure_dir(settings.models_dir)
    target = folder / filename
    if target.exists():
        raise DownloadError(f"{filename} is already in the models folder; delete it first")
    staging = folder / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
    kwargs: dict[str, Any] = {"revision": revision, "local_dir": staging}
    if progress is not None:
        kwargs["tqdm_class"] = _tqdm_reporting_to(progress)
    if settings.hub_endpoint:
        kwargs["endpoint"] = settings.hub_endpoint
    _check_reachable(settings.hub_endpoint or constants.ENDPOINT)
    try:
        fetched = Path(hf_hub_download(repo_id, filename, **kwargs))
        info = describe(fetched)
        if not info.ok:
            raise DownloadError(f"downloaded {filename} but it is not a usable GGUF: {info.error}")
        os.replace(fetched, target)
    except DownloadError:
        raise
    except Exception as e:
        raise DownloadError(
            f"download of {repo_id}/{filename} failed: {_explain(e, repo_id, filename)}"
        ) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return describe(target)


def clean_staging(settings: Settings) -> int:
    """Remove staging folders left by a download that was killed; returns how many."""
    removed = 0
    for leftover in ensure_dir(settings.models_dir).glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
        removed += 1
    return removed
