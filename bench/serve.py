"""API chat throughput and latency for 1, 4 and 16 concurrent clients: the app generating with its
embedded llama.cpp vs the app handing generation to a `llama_cpp.server` on loopback, in one run.

Both backends serve the bundled SmolLM2 with the same threads and context; each request asks for 32
new tokens at temperature 0. Results: bench/results/serve.json and bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_results

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "What does a compiler do?",
    "Why is the sky blue?",
]
MAX_TOKENS = 32
STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {seconds:.0f} s")


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure(base_url: str, clients: int, requests: int) -> dict[str, Any]:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)

    def one(i: int) -> tuple[float, int]:
        t = time.perf_counter()
        reply = client.chat.completions.create(
            model="bundled",
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            max_tokens=MAX_TOKENS,
            temperature=0,
        )
        tokens = reply.usage.completion_tokens if reply.usage else 0
        return time.perf_counter() - t, tokens

    one(0)  # warm: the model is loaded and its first prompt evaluated
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {
        "clients": clients,
        "requests": requests,
        "wall_s": wall,
        "requests_per_s": requests / wall,
        "completion_tokens_per_s": tokens / wall,
        "latency_p50_s": statistics.median(latencies),
        "latency_p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
    }


def run_backend(name: str, work: Path, env: dict[str, str], levels: list[int]) -> list[dict]:
    port = free_port()
    app = start(
        [sys.executable, "-m", "localllm.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        work / f"app-{name}.log",
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/", app)
        rows = []
        for clients in levels:
            row = {"backend": name, **measure(f"http://127.0.0.1:{port}/v1", clients, 16)}
            say(
                f"{name}: {clients} clients: {row['requests_per_s']:.2f} req/s, "
                f"{row['completion_tokens_per_s']:.1f} tok/s, p50 {row['latency_p50_s']:.2f} s"
            )
            rows.append(row)
        return rows
    finally:
        stop(app)


def table(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    lines = [
        f"### Serving (`bench/serve.py`, {m['cpus']} CPUs, {m['when']})",
        "",
        f"16 requests per level, {MAX_TOKENS} new tokens each, temperature 0, bundled SmolLM2; "
        f"threads {payload['threads']}. Run took {payload['run_s'] / 60:.1f} min.",
        "",
        "| backend | clients | req/s | completion tok/s | p50 latency s | p95 latency s |",
        "|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        lines.append(
            f"| {r['backend']} | {r['clients']} | {r['requests_per_s']:.2f} | "
            f"{r['completion_tokens_per_s']:.1f} | {r['latency_p50_s']:.2f} | "
            f"{r['latency_p95_s']:.2f} |"
        )
    lines += ["", payload["note"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 4, 16])
    args = parser.parse_args()
    from localllm.llm.catalog import bundled_model_path
    from localllm.llm.threads import default_batch_threads, default_threads

    threads, batch = default_threads(), default_batch_threads()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALLLM_")}
    base_env.update(
        LOCALLLM_MODELS_DIR=str(work / "models"),
        LOCALLLM_DOCS_STORE=str(work / "docs_store"),
        LOCALLLM_CONVERSATIONS_PATH=str(work / "conversations.sqlite3"),
        LOCALLLM_AUTH_PATH=str(work / "auth.json"),
        LOCALLLM_CONTEXT_SIZE="2048",
    )
    rows = run_backend("embedded llama.cpp", work, base_env, args.levels)

    server_port = free_port()
    server = start(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(bundled_model_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(server_port),
            "--n_ctx",
            "2048",
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(batch),
        ],
        base_env,
        work / "llama-server.log",
    )
    try:
        wait_for(f"http://127.0.0.1:{server_port}/v1/models", server)
        remote_env = {**base_env, "LOCALLLM_LLM_URL": f"http://127.0.0.1:{server_port}/v1"}
        rows += run_backend("llama_cpp.server", work, remote_env, args.levels)
    finally:
        stop(server)

    payload = {
        "benchmark": "serve",
        "machine": machine(),
        "threads": f"{threads} generation / {batch} prompt",
        "rows": rows,
        "note": "Both backends answer one request at a time (one model, one KV cache): more "
        "clients queue, so throughput stays flat and latency grows with the queue. The remote "
        "backend adds an HTTP hop per request and streams through it.",
        "run_s": time.perf_counter() - STARTED,
    }
    text = table(payload)
    out = write_results("serve", payload, text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
