"""Shared parts of the retrieval and grounded-answer tests: the Debian FAQ, pages known to hold
given sentences, and settings built in a clean environment (module fixtures run before the
autouse per-test isolation in conftest.py, so they must not read LOCALLLM_* or localllm.toml)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from localllm.config import Settings
from tests.conftest import cli_env, require
from tests.corpus import CORPUS, corpus_file

FAQ_NAME = "debian-faq.en.pdf"
FAQ = CORPUS / FAQ_NAME
# ../shared/eval/dev_qa.jsonl with its contents-page labels corrected (bench/eval/README.md)
EVAL_SET = Path(__file__).resolve().parents[1] / "bench" / "eval" / "faq_qa.jsonl"

# Sentences on these (1-based) pages of the Debian FAQ (see ../shared/eval/dev_qa.jsonl).
KNOWN = [
    ("Debian ships both gnash and swfdec", 28),
    ("Conffiles is a list of configuration files", 37),
    ("There are three ways of holding back packages", 40),
]
HOLD_QUESTION = "How do I put a package on hold?"
HOLD_PAGE = 40
OUT_OF_CORPUS = "What is the capital of Australia?"


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def faq_path() -> Path:
    return corpus_file(FAQ_NAME)


def eval_set() -> Path:
    """The dev questions on the FAQ, each with the page that answers it."""
    require(EVAL_SET.is_file(), f"the FAQ eval set {EVAL_SET} is missing")
    return EVAL_SET


def clean_settings(root: Path, cache: Path, **values: object) -> Settings:
    """Settings for a test's own data folder, ignoring the developer's LOCALLLM_* and toml."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("LOCALLLM_")]:
            mp.delenv(key)
        mp.setenv("LOCALLLM_CONFIG", str(root / "absent.toml"))
        return Settings(
            models_dir=root / "models",
            docs_store=root / "docs_store",
            runs_dir=root / "runs",
            conversations_path=root / "conversations.sqlite3",
            cache_dir=cache,
            **values,  # type: ignore[arg-type]
        )


def clean_cli_env(root: Path, cache: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess working on `root`'s data folders."""
    return cli_env(
        LOCALLLM_MODELS_DIR=str(root / "models"),
        LOCALLLM_DOCS_STORE=str(root / "docs_store"),
        LOCALLLM_RUNS_DIR=str(root / "runs"),
        LOCALLLM_CONFIG=str(root / "absent.toml"),
        LOCALLLM_CACHE_DIR=str(cache),
        **extra,
    )
