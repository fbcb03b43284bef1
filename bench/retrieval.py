"""Retrieval benchmark: quality, latency at 100k chunks, and time to first token of a grounded answer.

1. Quality: the FAQ (bench/eval/faq_qa.jsonl: the shared dev_qa.jsonl, contents-page labels corrected) and three other manuals (bench/eval/other_qa.jsonl,
   paraphrased questions held out from tuning) ingested with default settings; hit@1/5/10, MRR,
   nDCG@10 and latency for vector search, the default hybrid pipeline, and hybrid + the model-judge
   reranker (the bundled SmolLM2; it is slow, so it runs on a fixed subset, with the other two
   pipelines on the same subset beside it).
2. Latency at >= 100,000 chunks: every corpus PDF parsed, chunked and embedded once, then stored
   again and again as distinct documents; first search (BM25 rebuild included), then p50/p95/max of
   hybrid, vector and lexical searches, and the store's size on disk.
3. Time to first token of a grounded answer (retrieval + prompt + model) against the same final
   prompt sent straight to a bare llama_cpp.Llama, both cold; then follow-up questions, whose prompt
   starts with the previous prompt and answer, warm (KV cache kept) against cold.
Writes bench/results/retrieval.json and the retrieval table in bench/README.md.

    python bench/retrieval.py [--rerank-questions 12] [--target-chunks 100000]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_results

BENCH = Path(__file__).resolve().parent
SHARED = BENCH.parents[1] / "shared"
CORPUS = SHARED / "corpus"
FAQ = "debian-faq.en.pdf"
OTHERS = ["R-intro.pdf", "developers-reference.pdf", "reportlab-userguide.pdf"]
SCALE_FILES = ["fullrefman.pdf", FAQ, *OTHERS]
EVAL_SETS = {
    "faq": (BENCH / "eval" / "faq_qa.jsonl", [FAQ]),
    "other": (BENCH / "eval" / "other_qa.jsonl", OTHERS),
}
# dev_qa.jsonl indices: a question, then one that follows on from it in the FAQ
FOLLOW_UPS = [(63, 64), (37, 38), (45, 46), (54, 58)]
STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    from localllm.eval.metrics import percentile

    return percentile(values, q)


def subset(items: list[Any], n: int) -> list[Any]:
    """n items spread evenly over the list (all of them when n >= len)."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


# 1. quality ----------------------------------------------------------------------------------


def quality(services: Any, model: Any, rerank_n: int) -> list[dict[str, Any]]:
    from localllm.eval.metrics import load_qa
    from localllm.eval.runs import evaluate_retrieval
    from localllm.index.retrieve import Retriever
    from localllm.rag.rerank import ModelJudgeReranker

    plain = services.retriever()
    judged = Retriever(services.store, services.embedder, ModelJudgeReranker(model))
    pipelines = {
        "vector": (plain, "vector", False),
        "hybrid": (plain, "hybrid", False),
        "hybrid+rerank": (judged, "hybrid", True),
    }
    rows = []
    for collection, (qa_path, files) in EVAL_SETS.items():
        started = time.perf_counter()
        report = services.ingestor().ingest([CORPUS / f for f in files], collection)
        assert not report.failed, report.to_dict()
        chunks = services.store.count_chunks(collection)
        say(f"ingested {collection}: {chunks} chunks in {time.perf_counter() - started:.1f} s")
        items = [q for q in load_qa(qa_path) if q.doc and q.page]
        sample = subset(items, rerank_n)
        for name, (retriever, mode, rerank) in pipelines.items():
            for label, questions in (("all", items), ("subset", sample)):
                if name == "hybrid+rerank" and label == "all" and len(sample) < len(items):
                    continue
                if label == "subset" and len(sample) == len(items):
                    continue
                t = time.perf_counter()
                scores = evaluate_retrieval(
                    retriever, questions, collection, k=10, mode=mode, rerank=rerank
                )
                row = {
                    "set": collection,
                    "files": files,
                    "chunks": chunks,
                    "questions_from": label,
                    "pipeline": name,
                    **scores.to_dict(),
                }
                rows.append(row)
                say(
                    f"{collection} {name} ({label}, {scores.questions} q): hit@1/5/10 "
                    f"{scores.hit1:.2f}/{scores.hit5:.2f}/{scores.hit10:.2f} MRR {scores.mrr:.3f} "
                    f"p50 {scores.p50_ms:.0f} ms ({time.perf_counter() - t:.0f} s)"
                )
    return rows


def answers(services: Any, model: Any, n_answerable: int) -> list[dict[str, Any]]:
    """`eval answers` on each set: some answerable questions and the unanswerable ones."""
    from localllm.eval.metrics import load_qa
    from localllm.eval.runs import evaluate_answers
    from localllm.llm.manager import params_from_settings

    params = params_from_settings(services.settings, temperature=0.0, seed=0, max_tokens=96)
    unanswerable = load_qa(BENCH / "eval" / "unanswerable.jsonl")
    rows = []
    for collection, (qa_path, _files) in EVAL_SETS.items():
        items = subset([q for q in load_qa(qa_path) if q.doc and q.page], n_answerable)
        t = time.perf_counter()
        scores, details = evaluate_answers(
            services.grounded(model), model, [*items, *unanswerable], collection, params
        )
        gated = sum(1 for d in details if d["doc"] is None and not d["sources"])
        rows.append({"set": collection, **scores.to_dict(), "declined_without_model": gated})
        say(f"answers {collection}: {scores.to_dict()} ({time.perf_counter() - t:.0f} s)")
    return rows


# 2. latency at scale -------------------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def scale(
    embedder: Any, work: Path, queries: list[str], target: int, files: list[str]
) -> dict[str, Any]:
    from localllm.documents.chunk import chunk_document, chunk_id, search_text
    from localllm.documents.parse import parse_file
    from localllm.index.retrieve import Retriever
    from localllm.index.store import DocumentStore

    base = []
    for name in files:
        t = time.perf_counter()
        doc = parse_file(CORPUS / name, name=name, ocr=False)
        chunks = chunk_document(doc, embedder.count_tokens, 200)
        vectors = embedder.embed([search_text(c.text, c.section) for c in chunks])
        base.append((doc, chunks, vectors))
        say(f"scale: {name}: {len(chunks)} chunks embedded in {time.perf_counter() - t:.1f} s")
    per_copy = sum(len(c) for _, c, _ in base)
    copies = -(-target // per_copy)
    store = DocumentStore(work / "scale")
    try:
        t = time.perf_counter()
        for copy in range(copies):
            for doc, chunks, vectors in base:
                sha = hashlib.sha256(f"{doc.sha256}/{copy}".encode()).hexdigest()
                clone = dataclasses.replace(doc, sha256=sha, name=f"copy{copy:02d}-{doc.name}")
                moved = [
                    dataclasses.replace(c, id=chunk_id(sha, c.ordinal), doc_id=sha) for c in chunks
                ]
                store.add_document("scale", clone, moved, vectors, source=doc.path)
            say(f"scale: copy {copy + 1}/{copies} stored ({time.perf_counter() - t:.0f} s)")
        fill_s = time.perf_counter() - t
        total = store.count_chunks("scale")
        retriever = Retriever(store, embedder)
        t = time.perf_counter()
        retriever.search(queries[0], "scale", k=10)
        first_s = time.perf_counter() - t
        say(f"scale: {total} chunks; first hybrid search {first_s:.2f} s")
        modes = ("hybrid", "vector", "lexical")
        seconds: dict[str, list[float]] = {m: [] for m in modes}
        stages: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for q in queries:
            for mode in modes:
                t = time.perf_counter()
                found = retriever.search(q, "scale", k=10, mode=mode)
                seconds[mode].append(time.perf_counter() - t)
                stages[mode].append(found.timings)
        latency = {}
        for mode in modes:
            ms = [s * 1000 for s in seconds[mode]]
            parts = {
                key: statistics.median(st.get(key, 0.0) for st in stages[mode]) * 1000
                for key in ("embed", "vector", "bm25", "fetch")
            }
            latency[mode] = {
                "queries": len(ms),
                "p50_ms": pct(ms, 50),
                "p95_ms": pct(ms, 95),
                "max_ms": max(ms),
                "median_stage_ms": {k: v for k, v in parts.items() if v},
            }
            say(f"scale: {mode}: p50 {pct(ms, 50):.1f} ms p95 {pct(ms, 95):.1f} ms")
        size = folder_bytes(work / "scale")
    finally:
        store.close()
    return {
        "files": files,
        "chunks_per_copy": per_copy,
        "copies": copies,
        "chunks": total,
        "fill_s": fill_s,
        "first_search_s": first_s,
        "latency": latency,
        "disk_mib": size / 2**20,
        "note": "each copy is a distinct document (new sha256, name, chunk ids) with the same "
        "texts and vectors",
    }


# 3. time to first token ----------------------------------------------------------------------


def first_piece(pieces: Any) -> float:
    """Seconds until the generator yields its first piece; the generator is then closed."""
    t = time.perf_counter()
    next(pieces)
    seconds = time.perf_counter() - t
    pieces.close()
    return seconds


def ttft(services: Any, model: Any, n_questions: int) -> dict[str, Any]:
    import llama_cpp

    from localllm.eval.metrics import load_qa
    from localllm.llm.catalog import bundled_model_path
    from localllm.llm.manager import params_from_settings

    params = params_from_settings(services.settings, temperature=0, seed=0, max_tokens=32)
    chat = services.grounded()
    bare = llama_cpp.Llama(
        model_path=str(bundled_model_path()),
        n_ctx=model.context_length,
        n_threads=model.n_threads,
        n_threads_batch=model.n_threads_batch,
        verbose=False,
    )
    dev = load_qa(EVAL_SETS["faq"][0])

    def ours(question: str) -> tuple[float, Any]:
        model.llama.reset()  # cold: nothing of an earlier prompt is reused
        t = time.perf_counter()
        answer = chat.prepare(model, question, "faq", params)
        pieces = answer.stream(model, params)
        next(pieces)
        seconds = time.perf_counter() - t
        pieces.close()
        return seconds, answer

    def plain(tokens: list[int]) -> float:
        bare.reset()
        t = time.perf_counter()
        bare.create_completion(prompt=tokens, max_tokens=1, temperature=0)
        return time.perf_counter() - t

    # warm-up: page in both models' weights
    _, answer = ours(dev[0].question)
    plain(model._render(answer.messages)[0])
    rows = []
    for item in subset(dev, 2 * n_questions):
        if len(rows) == n_questions:
            break
        if len(rows) % 2:  # every other question the bare model goes first
            answer = chat.prepare(model, item.question, "faq", params)
            if answer.declined:
                continue
            tokens = model._render(answer.messages)[0]
            bare_s = plain(tokens)
            ours_s, answer = ours(item.question)
        else:
            ours_s, answer = ours(item.question)
            if answer.declined:
                continue
            tokens = model._render(answer.messages)[0]
            bare_s = plain(tokens)
        assert model._render(answer.messages)[0] == tokens
        row = {
            "question": item.question,
            "prompt_tokens": len(tokens),
            "sources": len(answer.sources),
            "ours_s": ours_s,
            "bare_s": bare_s,
            "search_s": answer.timings["search"],
            "prompt_build_s": answer.timings["prompt"],
            "ours_model_ttft_s": answer.seconds_to_first_token,
        }
        rows.append(row)
        say(
            f"ttft: {len(tokens)} tokens: ours {ours_s:.2f} s (search {row['search_s']:.2f}, "
            f"prompt {row['prompt_build_s']:.2f}) bare {bare_s:.2f} s"
        )
    bare.close()
    ours_med = statistics.median(r["ours_s"] for r in rows)
    bare_med = statistics.median(r["bare_s"] for r in rows)

    long_params = dataclasses.replace(params, max_tokens=64)
    follow = []
    for a, b in FOLLOW_UPS:
        q1, q2 = dev[a].question, dev[b].question
        model.llama.reset()
        first = chat.prepare(model, q1, "faq", long_params)
        for _ in first.stream(model, long_params):
            pass
        cached = [int(t) for t in model.llama.input_ids[: model.llama.n_tokens]]
        t = time.perf_counter()
        second = chat.prepare(model, q2, "faq", params, history=[first.turn])
        prepare_s = time.perf_counter() - t
        tokens = model._render(second.messages)[0]
        common = 0
        for x, y in zip(cached, tokens, strict=False):
            if x != y:
                break
            common += 1
        warm = first_piece(second.stream(model, params))
        model.llama.reset()
        cold = first_piece(model.stream_chat(second.messages, params))
        follow.append(
            {
                "q1": q1,
                "q2": q2,
                "q1_declined": first.declined,
                "q2_declined": second.declined,
                "q2_search_query": second.query,
                "cached_tokens_before_q2": len(cached),
                "q2_prompt_tokens": len(tokens),
                "q2_tokens_in_cache": common,
                "prepare_s": prepare_s,
                "warm_model_ttft_s": warm,
                "cold_model_ttft_s": cold,
            }
        )
        say(
            f"follow-up: {common}/{len(tokens)} prompt tokens cached; warm {warm:.2f} s, "
            f"cold {cold:.2f} s (+ prepare {prepare_s:.2f} s)"
        )
    return {
        "params": dataclasses.asdict(params),
        "threads": {"generation": model.n_threads, "prompt": model.n_threads_batch},
        "context": model.context_length,
        "questions": rows,
        "ours_median_s": ours_med,
        "bare_median_s": bare_med,
        "ratio_ours_over_bare": ours_med / bare_med,
        "follow_ups": follow,
        "follow_up_median_warm_s": statistics.median(f["warm_model_ttft_s"] for f in follow),
        "follow_up_median_cold_s": statistics.median(f["cold_model_ttft_s"] for f in follow),
    }


# report --------------------------------------------------------------------------------------


def table(payload: dict[str, Any]) -> str:
    m, t = payload["machine"], payload["targets"]
    lines = [
        f"### Retrieval (`bench/retrieval.py`, {m['cpus']} CPUs, {m['when']})",
        "",
        f"Settings: {payload['settings']}. Run took {payload['run_s'] / 60:.1f} min.",
        "",
        "**Quality** (a hit: a chunk from the gold file whose pages include the gold page; "
        "latency per search, 2 CPUs)",
        "",
        "| set | chunks | questions | pipeline | hit@1 | hit@5 | hit@10 | MRR | nDCG@10 | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["quality"]:
        which = "all" if r["questions_from"] == "all" else "fixed subset"
        lines.append(
            f"| {r['set']} | {r['chunks']} | {r['questions']} ({which}) | {r['pipeline']} | "
            f"{r['hit1']:.2f} | {r['hit5']:.2f} | {r['hit10']:.2f} | {r['mrr']:.3f} | "
            f"{r['ndcg10']:.3f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} |"
        )
    lines += [
        "",
        "faq: debian-faq.en.pdf with bench/eval/faq_qa.jsonl; other: R-intro, developers-reference, "
        "reportlab-userguide with bench/eval/other_qa.jsonl. The reranker (bundled SmolLM2 as a "
        "Yes/No judge of the top 10) is too slow for every question: it ran on the fixed subset "
        "(evenly spaced questions), with vector and hybrid on the same subset beside it. Baseline "
        "from the corpus README (plain MiniLM vector search, FAQ PDFs): 0.51 / 0.72 / 0.80.",
    ]
    s = payload["scale"]
    lines += [
        "",
        f"**Latency at {s['chunks']:,} chunks** ({s['copies']} copies of {s['chunks_per_copy']:,} "
        f"chunks from {', '.join(s['files'])}; {s['disk_mib']:.0f} MiB on disk; filled in "
        f"{s['fill_s']:.0f} s; first search after filling, BM25 rebuild included: "
        f"{s['first_search_s']:.2f} s)",
        "",
        "| mode | queries | p50 ms | p95 ms | max ms | median stages ms |",
        "|---|---|---|---|---|---|",
    ]
    for mode, r in s["latency"].items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["median_stage_ms"].items())
        lines.append(
            f"| {mode} | {r['queries']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['max_ms']:.1f} | {stages} |"
        )
    f = payload["ttft"]
    lines += [
        "",
        f"**Time to first token**, grounded answer on the FAQ vs the same prompt tokens to a bare "
        f"llama_cpp.Llama, both cold (KV cache reset), {len(f['questions'])} dev questions, "
        f"threads {f['threads']['generation']}/{f['threads']['prompt']}, context {f['context']}",
        "",
        "| prompt tokens | ours s | search s | prompt build s | ours model TTFT s | bare s | ours/bare |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in f["questions"]:
        lines.append(
            f"| {r['prompt_tokens']} | {r['ours_s']:.2f} | {r['search_s']:.3f} | "
            f"{r['prompt_build_s']:.3f} | {r['ours_model_ttft_s']:.2f} | {r['bare_s']:.2f} | "
            f"{r['ours_s'] / r['bare_s']:.2f} |"
        )
    lines += [
        f"| **median** | {f['ours_median_s']:.2f} | | | | {f['bare_median_s']:.2f} | "
        f"**{f['ratio_ours_over_bare']:.2f}** |",
        "",
        "Follow-ups (q1 answered in full, up to 64 tokens, then q2 with q1 as history): model "
        "TTFT of q2 with the KV cache kept (warm) and reset (cold)",
        "",
        "| q2 | KV cache before q2 | q2 prompt tokens | of them in the cache | warm TTFT s | cold TTFT s | prepare s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in f["follow_ups"]:
        lines.append(
            f"| {r['q2']} | {r['cached_tokens_before_q2']} | {r['q2_prompt_tokens']} | "
            f"{r['q2_tokens_in_cache']} | "
            f"{r['warm_model_ttft_s']:.2f} | {r['cold_model_ttft_s']:.2f} | {r['prepare_s']:.2f} |"
        )
    lines += [
        "",
        "**Answers end to end** (`localllm eval answers`: the bundled model, temperature 0, up to 96 "
        "tokens; answerable questions from the set, plus the 20 of bench/eval/unanswerable.jsonl)",
        "",
        "| set | answerable | a source holds the page | a cited source holds it | answered "
        "| unanswerable | declined | declined without asking the model | p50 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["answers"]:
        lines.append(
            f"| {r['set']} | {r['answerable']} | {r['source_has_page']:.2f} | "
            f"{r['cited_has_page']:.2f} | {r['answered']:.2f} | {r['unanswerable']} | "
            f"{r['declined_unanswerable']:.2f} | {r['declined_without_model']} | {r['p50_s']:.1f} |"
        )
    lines += ["", f"Targets: {t}"]
    return "\n".join(lines)


def main() -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
    parser = argparse.ArgumentParser()
    parser.add_argument("--rerank-questions", type=int, default=12, help="per eval set")
    parser.add_argument("--target-chunks", type=int, default=100_000)
    parser.add_argument("--ttft-questions", type=int, default=8)
    parser.add_argument("--answer-questions", type=int, default=12, help="answerable, per set")
    parser.add_argument("--scale-files", nargs="*", default=SCALE_FILES)
    parser.add_argument("--skip-scale", action="store_true", help="for a quick check")
    args = parser.parse_args()
    missing = [f for f in [*SCALE_FILES] if not (CORPUS / f).exists()]
    if missing:
        sys.exit(f"missing corpus files: {missing}")

    from localllm.config import Settings
    from localllm.eval.metrics import load_qa
    from localllm.services import Services

    work = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    settings = Settings(docs_store=work / "store", models_dir=work / "models")
    services = Services(settings)
    try:
        services.embedder.embed(["warm up"])
        model = services.models.get("bundled")
        quality_rows = quality(services, model, args.rerank_questions)
        ttft_result = ttft(services, model, args.ttft_questions)
        answer_rows = answers(services, model, args.answer_questions)
        embedder_name = services.embedder.backend_name
        services.models.close()  # the model is not needed any more: free its memory
        queries = [q.question for path, _ in EVAL_SETS.values() for q in load_qa(path)]
        scale_result = (
            {}
            if args.skip_scale
            else scale(services.embedder, work, queries, args.target_chunks, args.scale_files)
        )
    finally:
        services.close()
        shutil.rmtree(work, ignore_errors=True)

    def find(collection: str, pipeline: str) -> dict[str, Any]:
        return next(
            r
            for r in quality_rows
            if r["set"] == collection and r["pipeline"] == pipeline and r["questions_from"] == "all"
        )

    targets: dict[str, Any] = {
        "hybrid_hit5_at_least_0.90 (faq)": find("faq", "hybrid")["hit5"] >= 0.90,
        "hybrid_hit5_at_least_0.90 (other)": find("other", "hybrid")["hit5"] >= 0.90,
        "ttft_ours_within_1.3x_bare": ttft_result["ratio_ours_over_bare"] <= 1.3,
    }
    if scale_result:
        targets["hybrid_p95_at_most_50ms_at_100k"] = (
            scale_result["latency"]["hybrid"]["p95_ms"] <= 50 and scale_result["chunks"] >= 100_000
        )
    payload = {
        "benchmark": "retrieval",
        "machine": machine(),
        "settings": {
            "chunk_tokens": settings.chunk_tokens,
            "k": 10,
            "rag_sources": settings.rag_sources,
            "embedder": embedder_name,
            "chat_model": "SmolLM2-135M-Instruct.Q4_1.gguf (bundled)",
            "rerank_questions_per_set": args.rerank_questions,
        },
        "quality": quality_rows,
        "scale": scale_result,
        "ttft": ttft_result,
        "answers": answer_rows,
        "targets": targets,
        "run_s": time.perf_counter() - STARTED,
    }
    if args.skip_scale or args.target_chunks < 100_000:  # a quick check: nothing written
        print(table(payload) if scale_result else payload)
        return
    text = table(payload)
    out = write_results("retrieval", payload, text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
