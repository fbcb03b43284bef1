"""The Documents tab's "Adapt search to these documents": train the embedder on questions about the
collection, watch it, see hit@k before and after on held-out questions, keep or discard it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

from localllm.adapt_embedder import AdaptJob, decide, waiting
from localllm.errors import LocalLLMError
from localllm.index.adapt import AdaptOptions
from localllm.index.adapt_run import Adaptation
from localllm.services import Services

SCORE_COLUMNS = ["Embedder", "hit@1", "hit@5", "hit@10", "MRR"]
QUESTION_WRITERS = [("the chat model", "model"), ("the passages' own sentences", "sentences")]


def score_rows(record: Adaptation | None) -> list[list[Any]]:
    if record is None:
        return []
    shown = record.to_dict()
    rows = []
    for label, key in (("current", "before"), ("adapted", "after")):
        scores = shown[key]
        if scores:
            rows.append([label, *(scores.get(k) for k in ("hit1", "hit5", "hit10", "mrr"))])
    return rows


def summary(services: Services, collection: str) -> str:
    try:
        info = services.store.collection(collection)
    except LocalLLMError:
        return "Index some documents first."
    used = f"an adapted embedder ({info.embedder})" if info.embedder else "the app's embedder"
    record = waiting(services, collection)
    if record is None:
        return f"This collection searches with {used}."
    verdict = "better or as good" if record.better else "worse"
    return (
        f"An adapted embedder is waiting: on {record.pairs.get('held_out', 0)} held-out questions "
        f"it is **{verdict}** at hit@1. Keep it to search with it, or discard it."
    )


def build_adapt_section(services: Services, demo: gr.Blocks, collection: gr.Dropdown) -> None:
    jobs: dict[str, AdaptJob] = {}
    job_id = gr.State("")
    gr.Markdown("### Adapt search to these documents")
    gr.Markdown(
        "Questions are written about the collection's passages; the embedder trains on most of "
        "them and is measured on the rest, which it never sees. Search keeps using the current "
        "embedder until you keep the adapted one."
    )
    with gr.Row():
        steps = gr.Slider(10, 300, value=20, step=10, label="Training steps", elem_id="adapt-steps")
        writer = gr.Radio(
            QUESTION_WRITERS, value="model", label="Questions written by", elem_id="adapt-writer"
        )
    with gr.Row():
        start = gr.Button("Adapt search to these documents", elem_id="adapt-embedder")
        cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-adapt")
    status = gr.Markdown(elem_id="adapt-status")
    scores = gr.Dataframe(headers=SCORE_COLUMNS, interactive=False, elem_id="adapt-scores")
    with gr.Row():
        keep_button = gr.Button("Keep", variant="primary", interactive=False, elem_id="adapt-keep")
        discard_button = gr.Button("Discard", interactive=False, elem_id="adapt-discard")

    def shown(target: str) -> tuple[Any, ...]:
        record = waiting(services, target)
        ready = gr.update(interactive=record is not None)
        return summary(services, target), score_rows(record), ready, ready

    def run(target: str, step_count: float, questions: str) -> Iterator[tuple[Any, ...]]:
        options = AdaptOptions(steps=int(step_count))
        job = AdaptJob(services, target, options, questions).start()
        jobs[job.id] = job
        try:
            while not job.done:
                yield job.id, job.line, gr.skip(), gr.skip(), gr.skip()
                time.sleep(0.5)
        finally:
            jobs.pop(job.id, None)
        if job.cancelled:
            yield "", "Cancelled: nothing changed.", *shown(target)[1:]
            return
        if job.error is not None:
            if isinstance(job.error, LocalLLMError):
                raise gr.Error(str(job.error))
            raise gr.Error(f"Adapting stopped: {job.error}")
        yield "", *shown(target)

    def stop(current: str) -> str:
        job = jobs.get(current)
        if job is None:
            return "Nothing is being adapted."
        job.cancel()
        return "Cancelling after the current step…"

    def choose(target: str, choice: str) -> tuple[Any, ...]:
        try:
            record = decide(services, target, "keep" if choice == "keep" else "discard")
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        done = (
            "Kept: search now uses the adapted embedder."
            if record.state == "kept"
            else ("Discarded: search keeps the current embedder.")
        )
        _, _, ready, _ = shown(target)
        return f"{done} {summary(services, target)}", score_rows(record), ready, ready

    outputs = [status, scores, keep_button, discard_button]
    start.click(
        run,
        [collection, steps, writer],
        [job_id, *outputs],
        api_name="adapt_embedder",
        concurrency_limit=1,
        concurrency_id="adapt",
        show_progress_on=[status],
    )
    cancel.click(stop, job_id, status, api_name="cancel_adapt")
    keep_button.click(lambda t: choose(t, "keep"), collection, outputs, api_name="keep_embedder")
    discard_button.click(
        lambda t: choose(t, "discard"), collection, outputs, api_name="discard_embedder"
    )
    collection.change(shown, collection, outputs, api_name=False)
    demo.load(shown, collection, outputs, api_name=False)
