"""One adaptation's folder under the store (embedders/<collection>-<stamp>/) and its training
process: `python -m localllm.index.adapt_train FOLDER`, so torch never enters the app process.

The folder holds config.json, train.jsonl, held_out.jsonl, the tuned model (model/), the trainer's
progress.json, status.json and train.log, and adaptation.json: what the app knows about the run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localllm.index.adapt_pairs import AdaptError
from localllm.index.adapt_train import (
    CANCEL_FILE,
    MODEL_FOLDER,
    PROGRESS_FILE,
    STATUS_FILE,
    TrainingCancelled,
    write_json,
)

RECORD = "adaptation.json"
STATES = ("measuring", "pending", "kept", "discarded")
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 30.0


@dataclass
class Adaptation:
    """What one adaptation of a collection's embedder did and where it stands."""

    collection: str
    run: str  # the folder's name under embedders/
    base: str | None  # the model it started from, relative to the store; None: the app's
    shadow: str  # the Chroma name of the new vectors
    state: str = "measuring"
    steps: int = 0
    generator: str = ""
    pairs: dict[str, int] = field(default_factory=dict)
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    copied: list[str] = field(default_factory=list)  # the document ids the shadow holds
    seconds: dict[str, float] = field(default_factory=dict)
    backend: str = ""
    old_vectors: str | None = None  # after a keep: the Chroma name that was replaced

    @property
    def model(self) -> str:
        """The tuned model's folder, relative to the store (as the catalog records it)."""
        return f"embedders/{self.run}/{MODEL_FOLDER}"

    @property
    def better(self) -> bool:
        """The default choice: keep unless held-out hit@1 got worse."""
        return bool(self.after) and self.after["hit1"] >= self.before.get("hit1", 0.0)

    def to_dict(self) -> dict[str, Any]:
        keep = ("hit1", "hit5", "hit10", "mrr")
        return {
            "collection": self.collection,
            "run": self.run,
            "state": self.state,
            "embedder": self.model,
            "base": self.base,
            "generator": self.generator,
            "steps": self.steps,
            "pairs": self.pairs,
            "before": {k: round(v, 4) for k, v in self.before.items() if k in keep},
            "after": {k: round(v, 4) for k, v in self.after.items() if k in keep},
            "better": self.better,
            "backend": self.backend,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
        }


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:40] or "collection"


def new_folder(store_folder: Path, collection: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = store_folder / "embedders" / f"{slug(collection)}-{stamp}"
    while folder.exists():
        time.sleep(1.0)
        folder = store_folder / "embedders" / f"{slug(collection)}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True)
    return folder


def save(store_folder: Path, adaptation: Adaptation) -> None:
    write_json(store_folder / "embedders" / adaptation.run / RECORD, asdict(adaptation))


def load(folder: Path) -> Adaptation | None:
    try:
        return Adaptation(**json.loads((folder / RECORD).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def adaptations(store_folder: Path, collection: str) -> list[Adaptation]:
    """This collection's adaptations, oldest first."""
    found = [load(f) for f in sorted((store_folder / "embedders").glob("*/"))]
    return [a for a in found if a is not None and a.collection == collection]


def train(
    folder: Path,
    config: dict[str, Any],
    *,
    on_progress: Callable[[str, int, int], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """Run the training process to its end; its status.json. Raises TrainingCancelled when
    should_stop() turned true, AdaptError when the process failed."""
    write_json(folder / "config.json", config)
    for name in (CANCEL_FILE, PROGRESS_FILE, STATUS_FILE):
        (folder / name).unlink(missing_ok=True)
    command = [sys.executable, "-m", "localllm.index.adapt_train", str(folder)]
    with (folder / "train.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal goes to the app, not to training
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
    stopping_since: float | None = None
    try:
        while process.poll() is None:
            if should_stop() and stopping_since is None:
                (folder / CANCEL_FILE).touch()
                stopping_since = time.monotonic()
            if (
                stopping_since is not None
                and time.monotonic() - stopping_since > STOP_GRACE_SECONDS
            ):
                process.kill()
            progress = _read(folder / PROGRESS_FILE)
            if progress:
                on_progress(
                    str(progress.get("stage")), int(progress["step"]), int(progress["steps"])
                )
            time.sleep(POLL_SECONDS)
    finally:
        if process.poll() is None:  # the app is going (Ctrl-C, an error): training goes too
            process.kill()
            process.wait()
    status = _read(folder / STATUS_FILE)
    if stopping_since is not None or status.get("state") == "cancelled":
        raise TrainingCancelled(str(status.get("error") or "training was cancelled"))
    if status.get("state") != "done":
        raise AdaptError(
            f"training the embedder failed: {status.get('error') or _log_tail(folder)} "
            f"(log: {folder / 'train.log'})"
        )
    return status


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _log_tail(folder: Path, lines: int = 4) -> str:
    try:
        text = (folder / "train.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no log"
    return " | ".join(line for line in text.splitlines()[-lines:] if line.strip())
