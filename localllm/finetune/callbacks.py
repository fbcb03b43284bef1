"""What a training run tells the app as it goes (status.json, metrics.jsonl), and when it stops:
cancelled by the user, or its examples learnt."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from localllm.finetune.run_files import cancel_requested, update_status


def progress_callback(run_dir: Path) -> Any:
    from transformers import TrainerCallback

    metrics_path = run_dir / "metrics.jsonl"

    class Progress(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.last_time = time.monotonic()
            self.last_tokens: float | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            update_status(run_dir, step=state.global_step, max_steps=state.max_steps)
            self.last_time = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            update_status(run_dir, step=state.global_step, max_steps=state.max_steps)
            if cancel_requested(run_dir):
                control.should_save = True  # the checkpoint --resume continues from
                control.should_training_stop = True

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
                if self.last_tokens is not None and now > self.last_time:
                    line["tokens_per_s"] = round(
                        (float(tokens) - self.last_tokens) / (now - self.last_time), 1
                    )
                elif self.last_tokens is None and now > self.last_time:
                    line["tokens_per_s"] = round(float(tokens) / (now - self.last_time), 1)
                self.last_tokens, self.last_time = float(tokens), now
            with metrics_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")

    return Progress()


def learnt_callback(run_dir: Path, stop_loss: float) -> Any:
    from transformers import TrainerCallback

    class Learnt(TrainerCallback):  # type: ignore[misc]
        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
        ) -> None:
            loss = (metrics or {}).get("eval_loss")
            if state.global_step and loss is not None and float(loss) < stop_loss:
                control.should_training_stop = True
                update_status(
                    run_dir,
                    stopped_early=f"learnt at step {state.global_step} of {state.max_steps}: "
                    f"held-out loss {float(loss):.4f}, below {stop_loss:g}",
                )

    return Learnt()
