"""The files of one fine-tune run folder, shared by the training process and the app that follows it.

    runs/<id>/config.json    what to train (train_config.TrainConfig; written by finetune.jobs)
    runs/<id>/data.jsonl     the dataset, copied in so a run can be resumed or repeated
    runs/<id>/status.json    {"state", "step", "max_steps", "error"?, "eval_loss_before"?, ...}
    runs/<id>/metrics.jsonl  one line per logging step: step, loss, eval_loss, learning_rate, tokens_per_s
    runs/<id>/checkpoints/   Trainer checkpoints (resume continues from the last one)
    runs/<id>/adapter/       the final PEFT adapter
    runs/<id>/samples.json   validation prompts answered by the base and the tuned model
    runs/<id>/cancel         present = the user asked to stop
    runs/<id>/train.log      the training process's output

Imports nothing heavy: the UI reads these files while torch trains in another process.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from localllm.finetune.train_config import TrainConfig, TrainConfigError, check_config

ACTIVE_STATES = ("starting", "preparing", "running", "evaluating", "exporting")
FINAL_STATES = ("done", "failed", "cancelled")


def read_config(run_dir: Path) -> TrainConfig:
    try:
        given = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainConfigError(f"can't read {run_dir / 'config.json'}: {e}") from e
    if not isinstance(given, dict):
        raise TrainConfigError("config.json must be a JSON object")
    return check_config(given)


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_status(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / "status.json")


def update_status(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into status.json (None removes a key); returns the new status."""
    status = read_status(run_dir)
    for key, value in changes.items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    write_json(run_dir / "status.json", status)
    return status


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line being written as we read
        if isinstance(row, dict):
            out.append(row)
    return out


def cancel_requested(run_dir: Path) -> bool:
    return (run_dir / "cancel").exists()
