"""The training process: `python -m localllm.finetune.train RUN_DIR`, or `train(run_dir)` in-process.

RUN_DIR/config.json says what to do:

    {"base_gguf": "...gguf", "data": "...jsonl", "method": "lora", "rank": 8, "alpha": 16,
     "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "learning_rate": 2e-4,
     "max_steps": 100, "batch_size": 4, "max_length": 256, "seed": 0}

and optionally "validation_fraction" (0), "logging_steps" (1), "threads" (1), "hf_cache" (where the
HF copy of the base is kept; default RUN_DIR/../.hf-base). It writes:

    RUN_DIR/status.json    {"state": "running" | "done" | "failed", "error"?, "step", "max_steps"}
    RUN_DIR/metrics.jsonl  one line per logging step: step, loss, learning_rate, tokens_per_s, ...
    RUN_DIR/adapter/       the PEFT adapter (finetune.export turns it into a GGUF LoRA)

Chat examples are rendered with the base GGUF's own chat template (finetune.data), so the model is
trained on exactly the text llama.cpp prompts it with; the loss is on the assistant's answer only.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from localllm.errors import LocalLLMError

DEFAULTS: dict[str, Any] = {
    "method": "lora",
    "rank": 8,
    "alpha": 16,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "learning_rate": 2e-4,
    "max_steps": 100,
    "batch_size": 4,
    "max_length": 256,
    "seed": 0,
    "validation_fraction": 0.0,
    "logging_steps": 1,
    "threads": 1,  # measured: one torch thread is ~6x faster than two on a 2-vCPU machine
}


class TrainConfigError(LocalLLMError):
    """config.json is missing or asks for something we can't do."""


def read_config(run_dir: Path) -> dict[str, Any]:
    try:
        given = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainConfigError(f"can't read {run_dir / 'config.json'}: {e}") from e
    if not isinstance(given, dict):
        raise TrainConfigError("config.json must be a JSON object")
    config = {**DEFAULTS, **given}
    for key in ("base_gguf", "data"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise TrainConfigError(f"config.json needs '{key}' (a path)")
    if config["method"] != "lora":
        raise TrainConfigError(f"method {config['method']!r} is not supported (only 'lora')")
    return config


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
    os.replace(tmp, path)


def _status(run_dir: Path, state: str, step: int, max_steps: int, error: str | None = None) -> None:
    data: dict[str, Any] = {"state": state, "step": step, "max_steps": max_steps}
    if error is not None:
        data["error"] = error
    _write_json(run_dir / "status.json", data)


def build_dataset(config: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train rows, validation rows): prompt/completion rows for chat examples, or text rows when
    the file has any plain-text example (one dataset can't mix the two shapes)."""
    from localllm.finetune.data import load_jsonl, render, split
    from localllm.finetune.template import template_from_gguf

    loaded = load_jsonl(config["data"])
    template = template_from_gguf(config["base_gguf"])
    train, validation = split(
        loaded.examples, float(config["validation_fraction"]), int(config["seed"])
    )
    as_text = any(not e.is_chat for e in loaded.examples)

    # a text ending "<eos>\n" gets a second <eos> from TRL; the "\n" after the last turn is never
    # generated (llama.cpp stops at <eos>), so drop it and let the answer end on the one <eos>
    eos = getattr(template, "eos_token", "")

    def row(example: Any) -> dict[str, str]:
        full = render(example, template)
        if eos and full.rstrip().endswith(eos):
            full = full.rstrip()
        if as_text or example.messages is None:
            return {"text": full}
        at = full.rfind(example.messages[-1]["content"])
        if at <= 0:  # a template that rewrites the answer: train on all of it
            return {"prompt": "", "completion": full}
        return {"prompt": full[:at], "completion": full[at:]}

    return [row(e) for e in train], [row(e) for e in validation]


def train(run_dir: str | Path) -> None:
    """Run the training RUN_DIR/config.json describes; status.json says how it ended."""
    run_dir = Path(run_dir)
    max_steps = 0
    try:
        config = read_config(run_dir)
        max_steps = int(config["max_steps"])
        _status(run_dir, "running", 0, max_steps)
        _train(run_dir, config)
    except BaseException as e:
        message = str(e) if isinstance(e, LocalLLMError) else f"{type(e).__name__}: {e}"
        step = _last_step(run_dir)
        _status(run_dir, "failed", step, max_steps, message or type(e).__name__)
        raise


def _last_step(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "status.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _train(run_dir: Path, config: dict[str, Any]) -> None:
    threads = int(config["threads"])
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from localllm.finetune.base import hf_base

    torch.set_num_threads(threads)
    max_steps = int(config["max_steps"])
    train_rows, validation_rows = build_dataset(config)
    cache = Path(config.get("hf_cache") or run_dir.parent / ".hf-base")
    base_dir = hf_base(config["base_gguf"], cache)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)

    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.write_text("", encoding="utf-8")

    class Progress(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.last_time = time.monotonic()
            self.last_tokens = 0.0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _status(run_dir, "running", state.global_step, max_steps)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            logs = dict(logs or {})
            if "loss" not in logs and "eval_loss" not in logs:
                return  # the end-of-training summary
            now = time.monotonic()
            line: dict[str, Any] = {"step": state.global_step}
            for key in ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch"):
                if key in logs:
                    line[key] = float(logs[key])
            tokens = logs.get("num_tokens")
            if tokens is not None and "loss" in logs:
                elapsed = now - self.last_time
                if elapsed > 0:
                    line["tokens_per_s"] = round((float(tokens) - self.last_tokens) / elapsed, 1)
                self.last_tokens, self.last_time = float(tokens), now
            with metrics_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")

    args = SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=max_steps,
        per_device_train_batch_size=int(config["batch_size"]),
        per_device_eval_batch_size=int(config["batch_size"]),
        learning_rate=float(config["learning_rate"]),
        lr_scheduler_type="linear",
        warmup_steps=0,
        logging_steps=int(config["logging_steps"]),
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        max_length=int(config["max_length"]),
        seed=int(config["seed"]),
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = LoraConfig(
        r=int(config["rank"]),
        lora_alpha=float(config["alpha"]),
        lora_dropout=0.0,
        target_modules=list(config["target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(validation_rows) if validation_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[Progress()],
    )
    trainer.train()
    if validation_rows:
        trainer.evaluate()
    trainer.model.save_pretrained(run_dir / "adapter")
    tokenizer.save_pretrained(run_dir / "adapter")
    _status(run_dir, "done", trainer.state.global_step, max_steps)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m localllm.finetune.train RUN_DIR", file=sys.stderr)
        return 2
    try:
        train(Path(argv[0]))
    except LocalLLMError as e:
        print(f"training failed: {e}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
