"""Reliability under fire, as figures: how many hostile inputs were tried, survived, and lost.

Families: parsers (hundreds of hypothesis-mutated copies of real corpus PDFs and Office files plus
the named hostile cases, ingested by the real CLI in batches, each batch under a time limit, with
the store checked after every batch), and the API families of bench/robust_api.py (schema fuzzing,
hand cases, load, prompt injection) on the real app.

    python bench/robustness.py [--quick] [--samples N] [--skip-api]

Writes bench/results/robustness.json and the robustness table of bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from _report import machine, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.mutations import Sample, hostile, mutated, seeds  # noqa: E402

SEED_PDFS = (
    "debian-faq.en.pdf",
    "R-intro.pdf",
    "reportlab-userguide.pdf",
    "developers-reference.pdf",
    "congress.pdf",
    "ocrmypdf-multipage.pdf",
)
BATCH = 25
SECONDS_PER_FILE = 20  # a batch's time limit is this times its files
CANARY = "The heron nests by the north pond every spring."
# The message of a failure our code did not foresee (ingest's last-resort catch names the type).
UNFORESEEN = re.compile(r": [A-Z][A-Za-z]*(Error|Exception): ")


def draw(count: int, folder: Path) -> list[tuple[Path, str]]:
    """`count` mutated files (hypothesis, derandomized: the same set every run) and the hostile
    cases, written to `folder`; returns (path, how)."""
    from hypothesis import HealthCheck, Phase, given, settings

    pool = seeds(SEED_PDFS, pages=6)
    written: list[tuple[Path, str]] = []

    def keep(sample: Sample) -> None:
        path = folder / f"{len(written):04d}-{sample.name}"
        path.write_bytes(sample.data)
        written.append((path, sample.how))

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(mutated(pool))
    def collect(sample: Sample) -> None:
        keep(sample)

    collect()
    for sample in hostile():
        keep(sample)
    return written


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALLLM_")}
    env.update(
        LOCALLLM_DOCS_STORE=str(data / "store"),
        LOCALLLM_MODELS_DIR=str(data / "models"),
        LOCALLLM_CONVERSATIONS_PATH=str(data / "conversations.sqlite3"),
        LOCALLLM_CONFIG=str(data / "absent.toml"),
        LOCALLLM_CACHE_DIR=os.environ.get("LOCALLLM_CACHE_DIR", str(ROOT / "cache")),
        LOCALLLM_OCR="false",  # OCR is its own path: here every page is parsed, not read by eye
    )
    return env


def _cli(args: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str, str, int]:
    """Run `localllm ARGS`: (exit code or None on timeout, stdout, stderr, peak RSS MiB)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "localllm.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    peak, deadline = 0, time.monotonic() + timeout
    watched = psutil.Process(proc.pid)
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, watched.memory_info().rss)
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
        out, err = proc.communicate()
        return None, out, err, peak >> 20
    out, err = proc.communicate()
    return proc.returncode, out, err, peak >> 20


def _store_intact(env: dict[str, str]) -> bool:
    code, out, _, _ = _cli(["search", "where does the heron nest", "--json"], env, 120)
    if code != 0:
        return False
    hits = json.loads(out)
    code, out, _, _ = _cli(["docs", "--json"], env, 120)
    documents = json.loads(out)["documents"] if code == 0 else []
    whole = all(d["chunks"] > 0 and d["status"] == "ready" for d in documents)
    return bool(hits) and "north pond" in hits[0]["text"] and whole


def _judge(entry: dict[str, Any]) -> str | None:
    """Why a file's result is a failure of ours, or None when it is a clean outcome."""
    if entry["status"] in ("added", "unchanged", "skipped"):
        return None
    error = entry.get("error") or ""
    if "\n" in error or "Traceback" in error:
        return "a traceback instead of one clear line"
    if UNFORESEEN.search(error):
        return f"an unforeseen error: {error[:160]}"
    return None


def run_parsers(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        files = data / "files"
        files.mkdir()
        drawn = draw(count, files)
        env = _env(data)
        canary = data / "canary.md"
        canary.write_text(f"# Garden\n\n{CANARY}\n")
        _cli(["ingest", str(canary), "--json", "--quiet"], env, 300)
        outcomes: dict[str, int] = {}
        failures: list[str] = []
        damaged, peak_mib, seconds = 0, 0, 0.0
        for start in range(0, len(drawn), BATCH):
            batch = drawn[start : start + BATCH]
            clock = time.monotonic()
            code, out, err, peak = _cli(
                ["ingest", *(str(p) for p, _ in batch), "--json", "--quiet"],
                env,
                SECONDS_PER_FILE * len(batch),
            )
            seconds += time.monotonic() - clock
            peak_mib = max(peak_mib, peak)
            how = {p.name: h for p, h in batch}
            if code is None or not out.strip():
                reason = "hang (batch time limit)" if code is None else f"exit {code}: {err[-300:]}"
                failures.append(f"batch {start // BATCH}: {reason}")
                continue
            for entry in json.loads(out)["files"]:
                outcomes[entry["status"]] = outcomes.get(entry["status"], 0) + 1
                problem = _judge(entry)
                if problem:
                    failures.append(f"{entry['name']} ({how.get(entry['name'], '?')}): {problem}")
            if "Traceback" in err:
                failures.append(f"batch {start // BATCH}: a traceback on stderr")
            if not _store_intact(env):
                damaged += 1
                failures.append(f"batch {start // BATCH}: the store lost the earlier document")
        tried = len(drawn)
        lost = len(failures)
        return {
            "tried": tried,
            "survived": tried - sum(1 for f in failures if not f.startswith("batch")),
            "lost": lost,
            "failures": failures,
            "outcomes": outcomes,
            "store_damaged_batches": damaged,
            "peak_rss_mib": peak_mib,
            "seconds": round(seconds, 1),
        }


# Each fault and the test that provokes it on real parts (a process killed, a disk filled, a file
# damaged or locked), and checks the message and that nothing stored was lost.
FAULTS = {
    "Chroma server killed, then back": "tests/test_chroma_server.py::test_server_down_and_back",
    "Chroma server down when the store opens": (
        "tests/test_chroma_server.py::test_server_down_when_the_store_opens"
    ),
    "remote LLM server killed mid-answer": (
        "tests/test_remote_llm.py::test_a_server_killed_mid_answer_is_an_error_then_a_new_one_is_used"
    ),
    "remote LLM server down": "tests/test_remote_llm.py::test_a_server_that_is_down_is_named",
    "disk full during ingest": (
        "tests/test_robustness.py::test_a_full_disk_refuses_the_document_and_keeps_the_store"
    ),
    "disk full before training": (
        "tests/test_finetune_jobs.py::test_out_of_disk_is_refused_before_anything_is_written"
    ),
    "disk full before a merge export": (
        "tests/test_finetune_merge.py::test_a_full_disk_is_refused_before_writing"
    ),
    "a model file broken while the app runs": (
        "tests/test_app.py::test_a_model_broken_on_disk_is_an_error_not_a_crash"
    ),
    "saved conversations locked by a second app": (
        "tests/test_conversations.py::"
        "test_a_store_locked_by_another_program_is_a_clear_error_and_loses_nothing"
    ),
}


def run_faults() -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        subprocess.run(
            [*command, f"--junitxml={report}", *FAULTS.values()],
            cwd=ROOT,
            capture_output=True,
            timeout=1800,
        )
        cases = {
            f"{c.get('classname', '').replace('.', '/')}.py::{c.get('name')}": c
            for c in ET.parse(report).getroot().iter("testcase")
        }
    failures = []
    for fault, test in FAULTS.items():
        case = cases.get(test)
        if case is None or any(
            case.find(tag) is not None for tag in ("failure", "error", "skipped")
        ):
            failures.append(f"{fault}: {test} did not pass")
    return {
        "tried": len(FAULTS),
        "survived": len(FAULTS) - len(failures),
        "lost": len(failures),
        "failures": failures,
        "faults": list(FAULTS),
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        "| family | tried | survived | lost | figures |",
        "|---|---|---|---|---|",
    ]
    for family, r in results["families"].items():
        figures = r.get("figures") or {
            k: v for k, v in r.items() if k not in ("tried", "survived", "lost", "failures")
        }
        shown = ", ".join(f"{k}: {v}" for k, v in figures.items())
        rows.append(f"| {family} | {r['tried']} | {r['survived']} | {r['lost']} | {shown} |")
    failures = [
        f"- {family}: {f}" for family, r in results["families"].items() for f in r["failures"]
    ]
    m = results["machine"]
    head = f"### Robustness (`bench/robustness.py`, {m['cpus']} CPUs, {m['when']})\n\n"
    tail = "\n\nFailures found:\n" + "\n".join(failures) if failures else "\n\nNo failures found."
    return head + "\n".join(rows) + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small sample of every family")
    parser.add_argument("--samples", type=int, default=0, help="mutated documents (default 200)")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--skip-faults", action="store_true")
    args = parser.parse_args()
    count = args.samples or (30 if args.quick else 200)
    families: dict[str, Any] = {"parsers": run_parsers(count)}
    print(json.dumps(families["parsers"], indent=1), flush=True)
    if not args.skip_faults:
        families["faults"] = run_faults()
        print(json.dumps(families["faults"], indent=1), flush=True)
    if not args.skip_api:
        from robust_api import run_api_families

        families.update(run_api_families(quick=args.quick))
    results = {"machine": machine(), "quick": args.quick, "families": families}
    if args.quick:
        print(table(results))
        return
    write_results("robustness", results, table(results))
    print(table(results))


if __name__ == "__main__":
    main()
