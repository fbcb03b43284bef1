"""Fine-tune runs in runs/: create one from a dataset, launch its training process, follow, cancel,
resume and list them. Training runs in `python -m localllm.finetune.train` (finetune.train), so the
app and CLI never import torch and a crash in training can't take the app down.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from localllm.config import Settings
from localllm.errors import DatasetError, LocalLLMError
from localllm.files import ensure_dir
from localllm.finetune.base_model import MARKER as BASE_MARKER
from localllm.finetune.data import LoadedDataset, load_jsonl, write_jsonl
from localllm.finetune.estimate import token_stats
from localllm.finetune.names import ADAPTER_SUFFIX, clean_name, named_adapter_file
from localllm.finetune.preferences import PAIRS_FILE, load_pairs, write_pairs
from localllm.finetune.run_files import (
    ACTIVE_STATES,
    read_json,
    read_metrics,
    read_status,
    update_status,
    write_json,
)
from localllm.finetune.train_config import check_config, check_hyper
from localllm.llm.catalog import ModelInfo, resolve

TRAINING_MODULES = ("torch", "transformers", "peft", "trl", "datasets")
_processes: dict[str, subprocess.Popen[bytes]] = {}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RunError(LocalLLMError):
    """A run that doesn't exist, is already training, or can't be started."""


@dataclass
class RunInfo:
    id: str
    path: str
    state: str  # starting | evaluating | running | exporting | done | failed | cancelled
    name: str = ""  # what the user called the run ("" when unnamed)
    step: int = 0
    max_steps: int | None = None
    error: str | None = None
    method: str = ""
    base: str = ""
    data: str = ""
    examples: int = 0
    truncated: int = 0
    created: str = ""
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    perplexity_before: float | None = None
    perplexity_after: float | None = None
    general_perplexity_before: float | None = None
    general_perplexity_after: float | None = None
    warnings: list[str] = field(default_factory=list)
    bf16: bool | None = None  # the precision path training took: bf16 autocast, or fp32
    stopped_early: str | None = None  # why training ended before max_steps (the examples learnt)
    adapter_gguf: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def resumable(self) -> bool:
        return self.state in ("cancelled", "failed") and any(
            Path(self.path, "checkpoints").glob("checkpoint-*")
        )

    @property
    def label(self) -> str:
        """How a person knows the run: its name, else its id."""
        return self.name or self.id

    @property
    def method_shown(self) -> str:
        """The method as lists show it: "dpo 4-bit" for DPO over a 4-bit base."""
        return self.method + (" 4-bit" if self.config.get("four_bit") else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def runs_dir(settings: Settings) -> Path:
    return ensure_dir(settings.runs_dir)


def run_path(settings: Settings, run_id: str) -> Path:
    if not _RUN_ID.match(run_id) or not (runs_dir(settings) / run_id / "config.json").is_file():
        known = ", ".join(r.id for r in list_runs(settings)[:10]) or "none yet"
        raise RunError(f"no fine-tune run {run_id!r} (runs: {known})")
    return runs_dir(settings) / run_id


def create_run(
    settings: Settings,
    data: str | Path,
    *,
    base: str | None = None,
    method: str = "lora",
    export_over: str | None = None,
    name: str | None = None,
    **hyper: Any,
) -> tuple[str, LoadedDataset]:
    """A new run folder for `data` on `base` (a chat model's name; default: the default model).

    `base` may also be a local Hugging Face model folder: training then starts from its weights,
    and the adapter is exported over `export_over` (a GGUF of the same model in the catalog;
    default: the default model) so the chat can use it.

    The dataset is validated first (DatasetError if nothing usable is left) and copied into the run
    in its normalised form; the lines it dropped are reported with the run. A `name` is kept in
    config.json and names the exported files (names.named_adapter_file)."""
    missing = [m for m in TRAINING_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise RunError(
            f"fine-tuning needs the finetune extra (missing: {', '.join(missing)}): "
            'pip install -e ".[finetune]" (install torch first, see the README)'
        )
    hf_folder = Path(base) if base and (Path(base) / "config.json").is_file() else None
    info = resolve(settings, export_over) if hf_folder else resolve(settings, base)
    if info.kind != "model":
        raise RunError(f"{info.name} is a LoRA adapter; pick the model it was trained on")
    if hf_folder is not None:
        _same_model(hf_folder, info)
    # DPO: preference pairs (finetune.preferences), checked and counted as their chosen answers
    pairs = load_pairs(data) if method == "dpo" else None
    loaded = pairs.as_dataset() if pairs else load_jsonl(data)
    if not loaded.examples:
        raise DatasetError(f"{Path(data).name}: no usable examples ({loaded.summary()})")
    if hf_folder is None and not info.has_chat_template and any(e.is_chat for e in loaded.examples):
        raise RunError(
            f"{info.name} has no chat template (a base, not a chat model): tuned on chat examples "
            "it would not know where an answer ends and would not stop. Pick a chat model as the "
            'base, or train it on plain {"text": ...} examples'
        )
    chosen = check_hyper({"bf16": settings.finetune_bf16, **hyper, "method": method})

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_id = f"{stamp}-{method}"
    n = 2
    while (runs_dir(settings) / run_id).exists():
        run_id, n = f"{stamp}-{method}-{n}", n + 1
    folder = runs_dir(settings) / run_id
    models = ensure_dir(settings.models_dir)
    adapter = named_adapter_file(info.name, run_id, name, _taken_adapter_names(settings))
    config = check_config(
        {
            **chosen.model_dump(),
            "base_gguf": info.path,
            "base_name": hf_folder.name if hf_folder else info.name,
            "base_hf": str(hf_folder.resolve()) if hf_folder else None,
            "data": str((folder / (PAIRS_FILE if pairs else "data.jsonl")).resolve()),
            "data_name": Path(data).name,
            "hf_cache": str((runs_dir(settings) / ".hf-base").resolve()),
            "adapter_gguf": str((models / adapter).resolve()),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    if hf_folder is None:
        _check_disk(settings, info)
    mean_tokens, truncated = token_stats(info.path, loaded.examples, config.max_length)
    folder.mkdir(parents=True)
    try:
        if pairs:
            write_pairs(pairs.pairs, folder / PAIRS_FILE)
        else:
            write_jsonl(loaded.examples, folder / "data.jsonl")
        write_json(folder / "config.json", {**config.model_dump(), "name": clean_name(name)})
        write_json(
            folder / "status.json",
            {
                "state": "created",
                "step": 0,
                "max_steps": config.max_steps or None,
                "examples": len(loaded.examples),
                "dropped": [str(p) for p in loaded.problems],
                "mean_tokens": round(mean_tokens, 1),
                "truncated": truncated,
            },
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return run_id, loaded


def _taken_adapter_names(settings: Settings) -> set[str]:
    """Adapter file names in use: in the models folder, or planned by a run not yet exported."""
    taken = {p.name for p in ensure_dir(settings.models_dir).glob(f"*{ADAPTER_SUFFIX}")}
    for config in runs_dir(settings).glob("*/config.json"):
        planned = read_json(config).get("adapter_gguf")
        if isinstance(planned, str):
            taken.add(Path(planned).name)
    return taken


def _same_model(folder: Path, gguf: ModelInfo) -> None:
    """The HF folder and the GGUF its adapter goes over must be one model, or RunError."""
    from localllm.llm.gguf_header import read_header

    try:
        hf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunError(f"{folder} has no readable config.json: {e}") from e
    meta = read_header(Path(gguf.path)).metadata
    arch = meta.get("general.architecture")
    theirs = (meta.get(f"{arch}.block_count"), meta.get(f"{arch}.embedding_length"))
    ours = (hf.get("num_hidden_layers"), hf.get("hidden_size"))
    if ours != theirs:
        raise RunError(
            f"{folder.name} ({ours[0]} layers of {ours[1]}) is not the model of {gguf.name} "
            f"({theirs[0]} layers of {theirs[1]}): name the GGUF of this model to export over"
        )


def base_prepared(settings: Settings, base: ModelInfo) -> bool:
    """Whether the float copy of `base` that training needs was already made by an earlier run."""
    return (runs_dir(settings) / ".hf-base" / Path(base.path).stem / BASE_MARKER).is_file()


def _check_disk(settings: Settings, base: ModelInfo) -> None:
    """Room for the float copy of the base (made once) and the run's checkpoints, or RunError."""
    cached = base_prepared(settings, base)
    need = (0 if cached else (base.parameters or 0) * 4) + 256 * 2**20
    free = shutil.disk_usage(runs_dir(settings)).free
    if free < need:
        raise RunError(
            f"not enough disk space to train on {base.name}: need about {need // 2**20} MB, "
            f"{free // 2**20} MB free in {runs_dir(settings).resolve()}"
        )


def start(settings: Settings, run_id: str, *, resume: bool = False) -> RunInfo:
    """Launch the training process for `run_id` (resume: from its last checkpoint)."""
    folder = run_path(settings, run_id)
    current = run_info(settings, run_id)
    if current.active:
        raise RunError(f"run {run_id} is already {current.state}")
    if resume and not current.resumable:
        raise RunError(f"run {run_id} has no checkpoint to resume from (state: {current.state})")
    (folder / "cancel").unlink(missing_ok=True)
    update_status(folder, state="starting", error=None)
    command = [sys.executable, "-m", "localllm.finetune.train", str(folder)]
    if resume:
        command.append("--resume")
    with (folder / "train.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal goes to the app, not to training
        )
    _processes[str(folder.resolve())] = process
    update_status(folder, pid=process.pid)
    return run_info(settings, run_id)


def cancel(settings: Settings, run_id: str) -> RunInfo:
    """Ask the run to stop; it saves a checkpoint at the end of the current step and exits."""
    folder = run_path(settings, run_id)
    (folder / "cancel").touch()
    return run_info(settings, run_id)


def _alive(folder: Path, pid: Any) -> bool:
    process = _processes.get(str(folder.resolve()))
    if process is not None:
        return process.poll() is None
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _log_tail(folder: Path, lines: int = 6) -> str:
    try:
        text = (folder / "train.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip() and "Warning" not in line]
    return " | ".join(kept[-lines:])


def run_info(settings: Settings, run_id: str) -> RunInfo:
    folder = run_path(settings, run_id)
    config = read_json(folder / "config.json")
    status = read_status(folder)
    state = str(status.get("state", "created"))
    error = status.get("error")
    if state in ACTIVE_STATES and not _alive(folder, status.get("pid")):
        tail = _log_tail(folder)
        state = "failed"
        error = "the training process stopped without finishing" + (f": {tail}" if tail else "")
        update_status(folder, state=state, error=error, pid=None)
    return RunInfo(
        id=run_id,
        path=str(folder),
        state=state,
        name=str(config.get("name") or ""),
        step=int(status.get("step") or 0),
        max_steps=status.get("max_steps"),
        error=error,
        method=str(config.get("method", "")),
        base=str(config.get("base_name", Path(str(config.get("base_gguf", ""))).name)),
        data=str(config.get("data_name", "")),
        examples=int(status.get("examples") or 0),
        truncated=int(status.get("truncated") or 0),
        created=str(config.get("created", "")),
        eval_loss_before=status.get("eval_loss_before"),
        eval_loss_after=status.get("eval_loss_after"),
        perplexity_before=status.get("perplexity_before"),
        perplexity_after=status.get("perplexity_after"),
        general_perplexity_before=status.get("general_perplexity_before"),
        general_perplexity_after=status.get("general_perplexity_after"),
        warnings=list(status.get("warnings") or []),
        bf16=status.get("bf16"),
        stopped_early=status.get("stopped_early"),
        adapter_gguf=status.get("adapter_gguf"),
        config=config,
    )


def list_runs(settings: Settings) -> list[RunInfo]:
    """Every run, newest first."""
    folders = [p for p in runs_dir(settings).iterdir() if (p / "config.json").is_file()]
    return [run_info(settings, p.name) for p in sorted(folders, key=lambda p: p.name, reverse=True)]


def metrics(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    return read_metrics(run_path(settings, run_id))


def samples(settings: Settings, run_id: str, kind: str = "samples") -> list[dict[str, Any]]:
    """The held-out prompts ("samples") or the general questions ("general") answered before and
    after training."""
    found = read_json(run_path(settings, run_id) / "samples.json").get(kind)
    return found if isinstance(found, list) else []


def wait(
    settings: Settings,
    run_id: str,
    on_update: Callable[[RunInfo], None] | None = None,
    poll_s: float = 1.0,
) -> RunInfo:
    """Block until the run is no longer active; `on_update` sees each status change."""
    last: tuple[str, int] | None = None
    while True:
        info = run_info(settings, run_id)
        if on_update is not None and (info.state, info.step) != last:
            on_update(info)
            last = (info.state, info.step)
        if not info.active:
            process = _processes.pop(str(Path(info.path).resolve()), None)
            if process is not None:
                process.wait()
            return info
        time.sleep(poll_s)
