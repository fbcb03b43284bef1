"""The training process: `python -m localllm.finetune.train RUN_DIR [--resume]`, or `train(run_dir)`.

RUN_DIR/config.json says what to do (keys and defaults in finetune.run_files): the base GGUF, the
JSONL data, "lora", "qlora" (4-bit NF4 base through bitsandbytes) or "dpo" (LoRA on preference
pairs, finetune.dpo; over a 4-bit base too with "four_bit") and the hyper-parameters; with
"adapter_gguf" the adapter is also written there as a GGUF LoRA, and "samples" validation prompts
are answered by the base and the tuned model side by side. status.json moves through starting -> preparing -> evaluating -> running ->
evaluating -> exporting -> done (or failed / cancelled), with the validation loss before and after
and the general perplexity (forgetting.py) before and after; a DPO run also keeps the held-out
preference accuracy and reward margin at its end.

Chat examples are rendered with the base GGUF's own chat template (finetune.data), so the model is
trained on exactly the text llama.cpp prompts it with; the loss is on the assistant's answer only.
A cancel file in RUN_DIR (or SIGTERM) stops training at the end of the current step, after saving a
checkpoint that `--resume` continues from.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from localllm.errors import LocalLLMError
from localllm.finetune.callbacks import learnt_callback, progress_callback
from localllm.finetune.forgetting import (
    forgetting_warnings,
    general_perplexity,
    rehearsal_examples,
)
from localllm.finetune.hardware import training_threads, use_bf16
from localllm.finetune.run_files import (
    cancel_requested,
    read_config,
    read_metrics,
    read_status,
    update_status,
)
from localllm.finetune.train_config import TrainConfig, TrainConfigError

__all__ = ["TrainConfigError", "TrainingCancelled", "build_dataset", "train"]


class TrainingCancelled(LocalLLMError):
    """The user asked the run to stop; a checkpoint was kept when there was one to keep."""


def build_dataset(config: TrainConfig) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train rows, validation rows): prompt/completion rows for chat examples, or text rows when
    the file has any plain-text example (one dataset can't mix the two shapes)."""
    from localllm.finetune.data import load_jsonl, render, split
    from localllm.finetune.template import template_for

    loaded = load_jsonl(config.data)
    template = template_for(config.base_gguf, config.base_hf)
    train, validation = split(loaded.examples, float(config.validation_fraction), int(config.seed))
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

    # the base's own answers to general questions, mixed in so it keeps them (forgetting.py)
    share = float(config.rehearsal or 0)
    if share > 0 and config.base_gguf and not as_text:
        train = [*train, *rehearsal_examples(config.base_gguf, math.ceil(len(train) * share))]
    return [row(e) for e in train], [row(e) for e in validation]


def train(run_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Run the training RUN_DIR/config.json describes; returns the final status.json."""
    run_dir = Path(run_dir)
    try:
        config = read_config(run_dir)
        steps = int(config.max_steps or 0)
        update_status(
            run_dir, state="starting", pid=os.getpid(), error=None, max_steps=steps or None
        )
        if not resume:
            update_status(run_dir, step=0, eval_loss_before=None, eval_loss_after=None)
        _train(run_dir, config, resume)
    except TrainingCancelled as e:
        return update_status(run_dir, state="cancelled", error=str(e), pid=None)
    except BaseException as e:
        message = str(e) if isinstance(e, LocalLLMError) else f"{type(e).__name__}: {e}"
        update_status(run_dir, state="failed", error=message or type(e).__name__, pid=None)
        raise
    return update_status(run_dir, state="done", pid=None)


def _check_cancel(run_dir: Path) -> None:
    if cancel_requested(run_dir):
        raise TrainingCancelled("cancelled by the user")


def _train(run_dir: Path, config: TrainConfig, resume: bool) -> None:
    threads = int(config.threads) or training_threads()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTTrainer

    from localllm.finetune.base_model import hf_base

    torch.set_num_threads(threads)
    update_status(run_dir, threads=threads, bf16=use_bf16(config.bf16, torch))
    update_status(run_dir, state="preparing")
    if config.method == "dpo":
        from localllm.finetune.dpo import dpo_rows

        train_rows, validation_rows = dpo_rows(config)
    else:
        train_rows, validation_rows = build_dataset(config)
    update_status(run_dir, train_rows=len(train_rows))
    if config.base_hf:
        base_dir = Path(config.base_hf)
    else:
        cache = Path(config.hf_cache or run_dir.parent / ".hf-base")
        base_dir = hf_base(config.base_gguf, cache)
    _check_cancel(run_dir)
    tokenizer, model = _load(base_dir, config, torch)
    four_bit = sum(1 for m in model.modules() if type(m).__name__ == "Linear4bit")
    update_status(run_dir, four_bit_layers=four_bit)

    checkpoints = run_dir / "checkpoints"
    last = get_last_checkpoint(str(checkpoints)) if resume and checkpoints.is_dir() else None
    _keep_metrics_until(run_dir, _checkpoint_step(last) if last else 0)
    callbacks = [progress_callback(run_dir), learnt_callback(run_dir, config.stop_loss)]
    common = _common_arguments(config, checkpoints, bool(validation_rows), torch)
    if config.method == "dpo":
        from localllm.finetune.dpo import dpo_trainer

        rows = (train_rows, validation_rows)
        trainer = dpo_trainer(config, model, tokenizer, rows, common, callbacks, _lora(config))
    else:
        trainer = SFTTrainer(
            model=model,
            args=_sft_arguments(config, common),
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(validation_rows) if validation_rows else None,
            processing_class=tokenizer,
            peft_config=_lora(config),
            callbacks=callbacks,
        )
    if validation_rows and "eval_loss_before" not in read_status(run_dir):
        update_status(run_dir, state="evaluating")
        before = float(trainer.evaluate()["eval_loss"])
        update_status(run_dir, eval_loss_before=before, perplexity_before=_ppl(before))
    _check_cancel(run_dir)
    update_status(run_dir, state="running")
    trainer.train(resume_from_checkpoint=last)
    if cancel_requested(run_dir):
        raise TrainingCancelled(f"cancelled at step {trainer.state.global_step}; resume continues")
    update_status(run_dir, step=trainer.state.global_step, max_steps=trainer.state.max_steps)
    update_status(run_dir, state="evaluating")
    with trainer.model.disable_adapter():
        general_before = general_perplexity(trainer.model, tokenizer, torch)
    general_after = general_perplexity(trainer.model, tokenizer, torch)
    update_status(
        run_dir, general_perplexity_before=general_before, general_perplexity_after=general_after
    )
    trainer.model.save_pretrained(run_dir / "adapter")
    tokenizer.save_pretrained(run_dir / "adapter")
    if validation_rows:
        after = _eval_at(trainer.state.log_history, trainer.state.global_step)
        if after is None:
            update_status(run_dir, state="evaluating")
            after = float(trainer.evaluate()["eval_loss"])
        update_status(run_dir, eval_loss_after=after, perplexity_after=_ppl(after))
        if config.method == "dpo":
            from localllm.finetune.dpo import reward_summary

            update_status(run_dir, **reward_summary(trainer.state.log_history))
    del trainer, model
    _finish(run_dir, config)


def _load(base_dir: Path, config: TrainConfig, torch: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if not config.quantized:
        return tokenizer, AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)

    from transformers import BitsAndBytesConfig

    from localllm.finetune.base_model import own_memory

    # QLoRA is the memory-lean method: glibc keeps freed blocks for reuse and raises its mmap
    # threshold to the biggest block freed, so every step's activations would stay resident; a
    # fixed 64 KiB threshold gives them back to the OS (fresh pages each step: a little slower)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc

    # with bf16 the unquantized weights are kept in bf16 too: converting copies them out of the
    # fp32 file's memory map, which would otherwise stay mapped (and resident) for the whole run.
    # Without it (a CPU with no native bf16, where every bf16 op is emulated) all is fp32.
    dtype = torch.bfloat16 if use_bf16(config.bf16, torch) else torch.float32
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    device = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base_dir, quantization_config=quantization, device_map=device, dtype=dtype
        )
    except Exception as e:  # bitsandbytes missing or without a backend for this machine
        raise LocalLLMError(
            f"can't load the base in 4 bits for QLoRA ({e}); try method lora"
        ) from e
    own_memory(model)
    # prepare_model_for_kbit_training would make every unquantized weight fp32 again (the tied
    # embedding alone: 113 MB for SmolLM2); they are frozen, so bf16 serves. What it does
    # besides: inputs that require grad for checkpointing.
    model.enable_input_require_grads()
    return tokenizer, model


def _lora(config: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=int(config.rank),
        lora_alpha=float(config.alpha),
        lora_dropout=0.0,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _common_arguments(
    config: TrainConfig, output: Path, evaluate: bool, torch: Any
) -> dict[str, Any]:
    """The TrainingArguments every method shares (SFT here, DPO in finetune.dpo)."""
    steps = int(config.max_steps or 0)
    save_steps = max(1, int(config.save_steps))
    return {
        "output_dir": str(output),
        "max_steps": steps if steps > 0 else -1,
        "num_train_epochs": float(config.epochs or 1),
        "per_device_train_batch_size": int(config.batch_size),
        "per_device_eval_batch_size": int(config.batch_size),
        "learning_rate": float(config.learning_rate),
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "logging_steps": int(config.logging_steps),
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": 2,
        "eval_strategy": "steps" if evaluate else "no",
        "eval_steps": save_steps if evaluate else None,
        "report_to": [],
        "seed": int(config.seed),
        "use_cpu": not torch.cuda.is_available(),
        "bf16": use_bf16(config.bf16, torch),
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }


def _sft_arguments(config: TrainConfig, common: dict[str, Any]) -> Any:
    from trl import SFTConfig

    # activation checkpointing trades compute for memory: LoRA skips it (speed), QLoRA is chosen
    # to save memory and its activations outweigh a small model's weights, so it checkpoints (the
    # QLoRA recipe, and PEFT's default for k-bit training)
    checkpointing = (
        "activation_checkpointing"
        if "activation_checkpointing" in SFTConfig.__dataclass_fields__
        else "gradient_checkpointing"
    )
    return SFTConfig(
        **common,
        max_length=int(config.max_length),
        **{checkpointing: config.quantized},
    )


def _checkpoint_step(path: str) -> int:
    try:
        return int(Path(path).name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _keep_metrics_until(run_dir: Path, step: int) -> None:
    """A resumed run repeats the steps after its checkpoint: drop their old lines."""
    kept = [m for m in read_metrics(run_dir) if int(m.get("step", 0)) <= step]
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(m) + "\n" for m in kept), encoding="utf-8"
    )


def _eval_at(history: list[dict[str, Any]], step: int) -> float | None:
    """The validation loss the trainer already measured at `step`, if it did."""
    for row in reversed(history):
        if row.get("step") == step and "eval_loss" in row:
            return float(row["eval_loss"])
    return None


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def _finish(run_dir: Path, config: TrainConfig) -> None:
    """The adapter as a GGUF LoRA next to the chat models, and the side-by-side answers."""
    out = config.adapter_gguf
    if not out or not config.base_gguf:
        # an HF-folder base with no GGUF to go over: the PEFT adapter is the result
        update_status(run_dir, warnings=forgetting_warnings(read_status(run_dir), []))
        return
    from localllm.finetune.compare import compare_answers
    from localllm.finetune.export import export_lora_gguf

    update_status(run_dir, state="exporting")
    lora = export_lora_gguf(run_dir / "adapter", config.base_gguf, out)
    update_status(run_dir, adapter_gguf=str(lora))
    count = int(config.samples)
    general = compare_answers(run_dir, config.base_gguf, lora, count)["general"] if count else []
    update_status(run_dir, warnings=forgetting_warnings(read_status(run_dir), general))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    resume = "--resume" in argv
    args = [a for a in argv if a != "--resume"]
    if len(args) != 1:
        print("usage: python -m localllm.finetune.train RUN_DIR [--resume]", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    # SIGTERM (the app or the OS asking us to stop) ends the current step cleanly, like a cancel
    signal.signal(signal.SIGTERM, lambda *_: (run_dir / "cancel").touch())
    try:
        status = train(run_dir, resume=resume)
    except LocalLLMError as e:
        print(f"training failed: {e}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    print(json.dumps(status))
    return 0 if status.get("state") == "done" else 3


if __name__ == "__main__":
    sys.exit(main())
