"""The files of one fine-tune run folder, shared by the training process and the app that follows it.

    runs/<id>/config.json    what to train (see DEFAULTS; written by finetune.jobs)
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

from localllm.errors import LocalLLMError
from localllm.finetune.hardware import BF16_CHOICES, bf16_choice

METHODS = ("qlora", "lora")
DEFAULTS: dict[str, Any] = {
    "method": "lora",
    # chosen on bench/finetune_defaults.py (bench/README.md): 2e-4 on attention alone did not
    # learn a fact in 60 steps; higher rates or rank without rehearsal made it forget
    "rank": 16,
    "alpha": 32,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "learning_rate": 5e-4,
    "max_steps": 60,
    "epochs": None,  # used when max_steps is 0 or None
    "batch_size": 4,
    "max_length": 256,
    "seed": 0,
    "validation_fraction": 0.1,
    "logging_steps": 1,
    "save_steps": 10,
    "rehearsal": 0.5,  # general answers of the base mixed in, per training example (forgetting.py)
    "threads": 0,  # 0: the cores no other program is busy on (finetune.train.training_threads)
    "bf16": "auto",  # on | off | auto: autocast to bfloat16 where the CPU or GPU computes it natively
}
ACTIVE_STATES = ("starting", "preparing", "running", "evaluating", "exporting")
FINAL_STATES = ("done", "failed", "cancelled")


class TrainConfigError(LocalLLMError):
    """config.json is missing or asks for something we can't do."""


def read_config(run_dir: Path) -> dict[str, Any]:
    try:
        given = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainConfigError(f"can't read {run_dir / 'config.json'}: {e}") from e
    if not isinstance(given, dict):
        raise TrainConfigError("config.json must be a JSON object")
    return check_config({**DEFAULTS, **given})


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config with every hyper-parameter in range, or a TrainConfigError saying which is not."""
    if not isinstance(config.get("data"), str) or not config["data"]:
        raise TrainConfigError("config.json needs 'data' (a path)")
    if not any(isinstance(config.get(k), str) and config[k] for k in ("base_gguf", "base_hf")):
        raise TrainConfigError("config.json needs 'base_gguf' or 'base_hf' (a path)")
    if config["method"] not in METHODS:
        raise TrainConfigError(
            f"method {config['method']!r} is not supported (choose {' or '.join(METHODS)})"
        )
    positive = ("rank", "alpha", "learning_rate", "batch_size", "max_length")
    for key in positive:
        try:
            ok = float(config[key]) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise TrainConfigError(f"{key} must be a positive number, not {config[key]!r}")
    if not isinstance(config["threads"], int) or config["threads"] < 0:
        raise TrainConfigError(f"threads must be 0 (automatic) or more, not {config['threads']!r}")
    if not (config.get("max_steps") or config.get("epochs")):
        raise TrainConfigError("give max_steps or epochs (a positive number)")
    try:
        rehearsal_ok = 0 <= float(config.get("rehearsal") or 0) <= 4
    except (TypeError, ValueError):
        rehearsal_ok = False
    if not rehearsal_ok:
        raise TrainConfigError(
            f"rehearsal must be between 0 (off) and 4, not {config.get('rehearsal')!r}"
        )
    if bf16_choice(config.get("bf16")) not in BF16_CHOICES:
        raise TrainConfigError(
            f"bf16 must be one of {', '.join(BF16_CHOICES)}, not {config.get('bf16')!r}"
        )
    if not config["target_modules"]:
        raise TrainConfigError("target_modules is empty: name the layers LoRA adapts")
    return config


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
