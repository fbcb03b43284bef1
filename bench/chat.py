"""Chat engine benchmark: the app's engine against a bare llama_cpp.Llama, side by side in one run.

Same model (the bundled SmolLM2), same prompt, same threads, each configuration in its own process
(OpenMP's wait policy is fixed when the library loads, and peak RSS is per process), idle and with
the other core busy. Writes bench/results/chat.json and the chat table in bench/README.md.

    python bench/chat.py [--reps 3] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_results

SYSTEM = "You are a helpful assistant."
PROMPT = (
    "Here are some notes about a small town. "
    + " ".join(
        f"Note {i}: the bakery on street {i} opens at {6 + i % 3} in the morning and sells {i} kinds of bread."
        for i in range(18)
    )
    + " Now write a long, detailed story about a day in this town, mentioning many of the bakeries."
)


def worker(
    impl: str, threads: int, threads_batch: int, reps: int, max_tokens: int
) -> dict[str, Any]:
    """One configuration, in this process: TTFT, prompt and generation speed, peak RSS."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    from localllm.llm.catalog import bundled_model_path

    path = str(bundled_model_path())
    runs: list[dict[str, float]] = []
    if impl == "app":
        from localllm.llm.base import GenerationParams
        from localllm.llm.llamacpp import LlamaCppChatModel

        model = LlamaCppChatModel(
            path, context_size=4096, n_threads=threads, n_threads_batch=threads_batch
        )
        params = GenerationParams(temperature=0.0, max_tokens=max_tokens)

        def one() -> tuple[float, float, int, int]:
            model.llama.reset()  # cold prompt each time, as for bare llama.cpp
            t0 = time.perf_counter()
            first, n = 0.0, 0
            for _ in model.stream_chat(messages, params):  # type: ignore[arg-type]
                n += 1
                if n == 1:
                    first = time.perf_counter() - t0
            return first, time.perf_counter() - t0, n, model.last_stats.prompt_tokens
    else:
        import llama_cpp

        llm = llama_cpp.Llama(
            model_path=path,
            n_ctx=4096,
            n_threads=threads,
            n_threads_batch=threads_batch,
            verbose=False,
        )
        prompt_tokens = len(
            llm.tokenize(
                llama_cpp.llama_chat_format.Jinja2ChatFormatter(
                    template=llm.metadata["tokenizer.chat_template"], eos_token="", bos_token=""
                )(messages=messages).prompt.encode(),
                add_bos=False,
                special=True,
            )
        )

        def one() -> tuple[float, float, int, int]:
            llm.reset()
            t0 = time.perf_counter()
            first, n = 0.0, 0
            for chunk in llm.create_chat_completion(
                messages=messages, temperature=0.0, max_tokens=max_tokens, stream=True
            ):
                if chunk["choices"][0]["delta"].get("content"):  # type: ignore[index]
                    n += 1
                    if n == 1:
                        first = time.perf_counter() - t0
            return first, time.perf_counter() - t0, n, prompt_tokens

    one()  # warm-up: page in the weights
    for _ in range(reps):
        ttft, total, n, n_prompt = one()
        runs.append(
            {
                "ttft_s": ttft,
                "prompt_tok_s": n_prompt / ttft if ttft else 0.0,
                "gen_tok_s": (n - 1) / (total - ttft) if n > 1 and total > ttft else 0.0,
                "completion_tokens": n,
                "prompt_tokens": n_prompt,
            }
        )
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    med["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return med


Config = tuple[str, int, int, str | None]  # engine, threads, batch threads, OMP_WAIT_POLICY


def run_config(config: Config, busy: bool, reps: int, max_tokens: int) -> dict[str, Any]:
    impl, threads, threads_batch, omp = config
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if omp:
        env["OMP_WAIT_POLICY"] = omp
    hog = None
    if busy:  # keep one core fully busy, as another program on a small machine would
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                impl,
                "--threads",
                str(threads),
                "--threads-batch",
                str(threads_batch),
                "--reps",
                str(reps),
                "--max-tokens",
                str(max_tokens),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=900,
        )
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(
        {
            "impl": impl,
            "threads": threads,
            "threads_batch": threads_batch,
            "omp_wait_policy": omp or ("set by the app" if impl == "app" else "default"),
            "load": "busy" if busy else "idle",
        }
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["app", "bare"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--threads-batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args.threads, args.threads_batch, args.reps, args.max_tokens)
        print(json.dumps(result))
        return

    from localllm.cpu import available_cores
    from localllm.llm.threads import default_batch_threads, default_threads

    cores = available_cores()
    gen, batch = default_threads(), default_batch_threads()
    app_policy = "PASSIVE" if gen == 1 else None  # what localllm.llm.threads sets
    app: Config = ("app", gen, batch, None)  # the app picks its own threads and wait policy
    twin: Config = ("bare", gen, batch, app_policy)  # bare llama.cpp configured the same way
    configs = [app, twin, ("bare", cores, cores, None), ("bare", 1, 1, None)]
    # Rounds interleave the configurations so drift in the machine's speed hits them all alike.
    samples: dict[tuple[Config, bool], list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for busy in (False, True):
            for config in configs:
                samples.setdefault((config, busy), []).append(
                    run_config(config, busy, args.reps, args.max_tokens)
                )
    results = []
    for runs in samples.values():
        r = dict(runs[0])
        for key in ("ttft_s", "prompt_tok_s", "gen_tok_s", "peak_rss_mib"):
            r[key] = statistics.median(x[key] for x in runs)
        r["rounds"] = len(runs)
        print(
            f"{r['load']:5} {r['impl']:4} threads={r['threads']}/{r['threads_batch']} "
            f"omp={r['omp_wait_policy']:8} gen {r['gen_tok_s']:6.1f} tok/s  "
            f"prompt {r['prompt_tok_s']:6.1f} tok/s  ttft {r['ttft_s']:.3f} s  "
            f"rss {r['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        results.append(r)

    def find(config: Config, load: str) -> dict[str, Any]:
        impl, threads, threads_batch, _ = config
        return next(
            r
            for r in results
            if (r["impl"], r["threads"], r["threads_batch"], r["load"])
            == (impl, threads, threads_batch, load)
        )

    ratios = {}
    for load in ("idle", "busy"):
        ours, bare = find(app, load), find(twin, load)
        ratios[load] = {
            "gen_tok_s_app_over_bare": ours["gen_tok_s"] / bare["gen_tok_s"],
            "prompt_tok_s_app_over_bare": ours["prompt_tok_s"] / bare["prompt_tok_s"],
            "ttft_app_over_bare": ours["ttft_s"] / bare["ttft_s"],
            "rss_app_over_bare": ours["peak_rss_mib"] / bare["peak_rss_mib"],
        }
    ratios["app_busy_over_idle_gen"] = (
        find(app, "busy")["gen_tok_s"] / find(app, "idle")["gen_tok_s"]
    )
    all_cores: Config = ("bare", cores, cores, None)
    ratios["all_cores_busy_over_idle_gen"] = (
        find(all_cores, "busy")["gen_tok_s"] / find(all_cores, "idle")["gen_tok_s"]
    )
    payload = {
        "benchmark": "chat",
        "machine": machine(),
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (bundled)",
        "reps": args.reps,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "app_default_threads": {"generation": gen, "prompt": batch, "omp_wait_policy": app_policy},
        "results": results,
        "ratios": ratios,
        "targets": {
            "app_within_5pct_of_bare": all(
                ratios[ld]["gen_tok_s_app_over_bare"] >= 0.95
                and ratios[ld]["ttft_app_over_bare"] <= 1.05
                for ld in ("idle", "busy")
            ),
            "no_collapse_under_load (busy gen >= 0.7x idle)": ratios["app_busy_over_idle_gen"]
            >= 0.7,
        },
    }
    rows = [
        "| load | engine | threads (gen/prompt) | OMP wait | gen tok/s | prompt tok/s | TTFT s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['load']} | {'app' if r['impl'] == 'app' else 'bare llama_cpp.Llama'} | "
            f"{r['threads']}/{r['threads_batch']} | "
            f"{r['omp_wait_policy']} | {r['gen_tok_s']:.1f} | {r['prompt_tok_s']:.1f} | {r['ttft_s']:.3f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
    table = "\n".join(
        [
            f"### Chat engine (`bench/chat.py`, {payload['machine']['cpus']} CPUs, {payload['machine']['when']})",
            "",
            *rows,
            "",
            f"App / bare, same threads: idle gen {ratios['idle']['gen_tok_s_app_over_bare']:.3f}x, "
            f"TTFT {ratios['idle']['ttft_app_over_bare']:.3f}x; busy gen "
            f"{ratios['busy']['gen_tok_s_app_over_bare']:.3f}x, TTFT {ratios['busy']['ttft_app_over_bare']:.3f}x. "
            f"App busy / idle generation: {ratios['app_busy_over_idle_gen']:.2f}x "
            f"(all cores: {ratios['all_cores_busy_over_idle_gen']:.2f}x). "
            f"Targets: {json.dumps(payload['targets'])}",
        ]
    )
    out = write_results("chat", payload, table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
