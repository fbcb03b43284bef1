"""Ingest benchmark: the app's pipeline against a naive one, side by side in one process.

Ours: Ingestor (pypdfium2 per-page parsing, title-aware chunks, the default embedder, Chroma store).
Naive: pdfminer.six text boxes as unstructured elements + `chunk_by_title` + sentence-transformers
with the same model at default settings + `collection.add`, as a first attempt would be written.
unstructured's own `partition_pdf(strategy="fast")` is pdfminer plus per-element NLP, and it can't run
offline (it downloads a spaCy model on first use), so the naive parse here is pdfminer alone: faster
than the real thing, which makes our ratio an underestimate.
Per file: pages/s and chunks/s end to end, split into parse / chunk / embed / store; peak RSS of each
pipeline (sampled). Writes bench/results/ingest.json and the ingest table in bench/README.md.

    python bench/ingest.py [--naive-page-limit 120]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_results

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
FILES = ["R-intro.pdf", "reportlab-userguide.pdf", "developers-reference.pdf", "fullrefman.pdf"]


@contextmanager
def peak_rss() -> Iterator[Callable[[], float]]:
    """Sample this process's RSS every 20 ms; yields a function giving the peak so far in MiB."""
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], proc.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: peak[0] / 2**20
    finally:
        done.set()
        thread.join()


def ours(files: list[Path], work: Path) -> list[dict[str, Any]]:
    from localllm.config import Settings
    from localllm.services import Services

    services = Services(Settings(docs_store=work / "ours", models_dir=work / "models"))
    rows = []
    try:
        services.embedder.embed(["warm up"])  # load once, outside the timings
        for path in files:
            with peak_rss() as peak:
                started = time.perf_counter()
                report = services.ingestor().ingest([path], "bench")
                seconds = time.perf_counter() - started
            r = report.results[0]
            assert r.status == "added", r
            rows.append(
                {
                    "pipeline": "ours",
                    "file": path.name,
                    "pages": r.pages,
                    "chunks": r.chunks,
                    "seconds": seconds,
                    "stages": r.timings,
                    "peak_rss_mib": peak(),
                    "embedder": services.embedder.backend_name,
                }
            )
    finally:
        services.close()
    return rows


def naive(files: list[Path], work: Path, page_limit: int) -> list[dict[str, Any]]:
    import chromadb
    import pypdf
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTTextContainer
    from sentence_transformers import SentenceTransformer
    from unstructured.chunking.title import chunk_by_title
    from unstructured.documents.elements import ElementMetadata, NarrativeText

    from localllm.index.embed import bundled_embedder_path

    def partition_pdf(filename: str) -> list[NarrativeText]:
        return [
            NarrativeText(text=box.get_text(), metadata=ElementMetadata(page_number=number))
            for number, layout in enumerate(extract_pages(filename), start=1)
            for box in layout
            if isinstance(box, LTTextContainer) and box.get_text().strip()
        ]

    model = SentenceTransformer(str(bundled_embedder_path()))
    client = chromadb.PersistentClient(
        path=str(work / "naive"), settings=chromadb.Settings(anonymized_telemetry=False)
    )
    rows = []
    for i, path in enumerate(files):
        source, pages = path, len(pypdf.PdfReader(path).pages)
        if pages > page_limit:  # the naive parser runs at ~30 pages/s: time a prefix
            writer = pypdf.PdfWriter()
            for page in pypdf.PdfReader(path).pages[:page_limit]:
                writer.add_page(page)
            source = work / f"prefix-{path.name}"
            writer.write(source)
            pages = page_limit
        collection = client.create_collection(f"naive{i}", embedding_function=None)
        with peak_rss() as peak:
            t0 = time.perf_counter()
            elements = partition_pdf(str(source))
            t1 = time.perf_counter()
            chunks = chunk_by_title(elements)
            t2 = time.perf_counter()
            texts = [c.text for c in chunks]
            vectors = model.encode(texts)
            t3 = time.perf_counter()
            for start in range(0, len(texts), 1000):
                collection.add(
                    ids=[f"{i}-{j}" for j in range(start, min(start + 1000, len(texts)))],
                    embeddings=vectors[start : start + 1000],
                    documents=texts[start : start + 1000],
                )
            t4 = time.perf_counter()
        rows.append(
            {
                "pipeline": "naive",
                "file": path.name,
                "pages": pages,
                "chunks": len(texts),
                "seconds": t4 - t0,
                "stages": {"parse": t1 - t0, "chunk": t2 - t1, "embed": t3 - t2, "store": t4 - t3},
                "peak_rss_mib": peak(),
                "note": f"first {pages} pages" if source != path else "",
            }
        )
    return rows


def main() -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")  # unstructured pings its host on import otherwise
    os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
    parser = argparse.ArgumentParser()
    parser.add_argument("--naive-page-limit", type=int, default=300)
    parser.add_argument("--files", nargs="*", default=FILES)
    args = parser.parse_args()
    files = [CORPUS / f for f in args.files]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        sys.exit(f"missing corpus files: {missing}")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        rows = ours(files, work) + naive(files, work, args.naive_page_limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def rate(r: dict[str, Any], what: str, stage: str | None = None) -> float:
        seconds = r["stages"][stage] if stage else r["seconds"]
        return r[what] / seconds if seconds else float("inf")

    ratios = {}
    for f in args.files:
        a = next(r for r in rows if r["pipeline"] == "ours" and r["file"] == f)
        b = next(r for r in rows if r["pipeline"] == "naive" and r["file"] == f)
        ratios[f] = {
            "pages_per_s_ours_over_naive": rate(a, "pages") / rate(b, "pages"),
            "parse_pages_per_s_ours": rate(a, "pages", "parse"),
            "parse_pages_per_s_naive": rate(b, "pages", "parse"),
        }
    text_pdfs = [r for r in rows if r["pipeline"] == "ours"]
    payload = {
        "benchmark": "ingest",
        "machine": machine(),
        "rows": rows,
        "ratios": ratios,
        "targets": {
            "end_to_end_at_least_3x_naive": all(
                v["pages_per_s_ours_over_naive"] >= 3 for v in ratios.values()
            ),
            "parse_at_least_300_pages_per_s": all(
                rate(r, "pages", "parse") >= 300 for r in text_pdfs
            ),
        },
    }
    lines = [
        f"### Ingest (`bench/ingest.py`, {payload['machine']['cpus']} CPUs, {payload['machine']['when']})",
        "",
        "| pipeline | file | pages | chunks | pages/s | chunks/s | parse p/s | chunk s | embed s | store s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        st = r["stages"]
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(
            f"| {r['pipeline']} | {r['file']}{note} | {r['pages']} | {r['chunks']} | {rate(r, 'pages'):.1f} | "
            f"{rate(r, 'chunks'):.1f} | {rate(r, 'pages', 'parse'):.0f} | {st['chunk']:.2f} | {st['embed']:.1f} | "
            f"{st['store']:.2f} | {r['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        "End to end, ours / naive (pages/s): "
        + ", ".join(f"{f} {v['pages_per_s_ours_over_naive']:.1f}x" for f, v in ratios.items())
        + f". Embedder: {rows[0].get('embedder')}. Targets: {payload['targets']}",
    ]
    out = write_results("ingest", payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
