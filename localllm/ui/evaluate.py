"""Evaluate tab: the user's questions (a JSONL file, or written from a collection), the models to
compare, each answering with and without retrieval (or in one mode); one table and a bar chart of
the scores."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from localllm.errors import LocalLLMError
from localllm.eval.compare import Comparison, compare_models
from localllm.eval.generated_qa import generate_qa, new_set_path, write_qa
from localllm.eval.metrics import QAItem, load_qa
from localllm.llm.manager import params_from_settings
from localllm.services import Services
from localllm.ui.chat_view import collection_choices, default_model_name, model_choices

SOURCES = ["A question file (JSONL)", "Questions written from the collection"]
MODES = {"with retrieval": True, "without retrieval": False}  # the order rows come in
COLUMNS = [
    "Model",
    "Retrieval",
    "Token F1",
    "ROUGE-L",
    "Citation precision",
    "Cites the answer's page",
    "Declined",
    "Perplexity",
    "Seconds per answer",
]
NONE = "\N{EN DASH}"  # a score that does not apply
LABEL_CHARS = 17  # the chart cuts axis labels past ~27 characters at the end; we cut the start
CHART_LABEL = "Token F1 against the reference answers"


def _number(value: float | None) -> str:
    return NONE if value is None else f"{value:.3f}"


def table_rows(result: Comparison) -> list[list[Any]]:
    return [
        [
            row.model,
            "with" if row.retrieval else "without",
            _number(row.f1),
            _number(row.rouge_l),
            _number(row.citation_precision),
            _number(row.gold_page_cited),
            _number(row.declined),
            NONE if row.perplexity is None else f"{row.perplexity:.2f}",
            f"{row.seconds:.2f}",
        ]
        for row in result.rows
    ]


def _tail(name: str, keep: int = LABEL_CHARS) -> str:
    """The end of a long model name, where names of one base differ (run, quantization)."""
    return name if len(name) <= keep else "\N{HORIZONTAL ELLIPSIS}" + name[-(keep - 1) :]


def chart_frame(result: Comparison) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": [
                f"{_tail(r.model.removesuffix('.gguf'))} ({'with' if r.retrieval else 'without'})"
                for r in result.rows
            ],
            "f1": [r.f1 for r in result.rows],
            "retrieval": ["with" if r.retrieval else "without" for r in result.rows],
        },
        columns=["run", "f1", "retrieval"],
    )


def summary(result: Comparison, written: Path | None) -> str:
    lines = [
        f"**{len(result.rows)} {'row' if len(result.rows) == 1 else 'rows'}** over "
        f"{result.questions} "
        + ("question" if result.questions == 1 else "questions")
        + (f" from collection **{result.collection}**." if result.collection else ".")
    ]
    if result.cancelled:
        lines.append("Cancelled: only the model and retrieval pairs finished before are shown.")
    if written is not None:
        lines.append(
            f"The questions were written from the collection and saved as `{written}` "
            "(an eval set: keep it out of fine-tuning data)."
        )
    return "\n\n".join(lines)


def build_evaluate_tab(services: Services, tab: gr.Tab) -> None:
    settings = services.settings
    cancel = threading.Event()

    gr.Markdown(
        "Fine-tune, retrieval, or both? Each model answers your questions with and without your "
        "documents, and the answers are scored against your reference answers."
    )
    with gr.Row():
        with gr.Column():
            source = gr.Radio(SOURCES, value=SOURCES[0], label="Questions", elem_id="ev-source")
            upload = gr.File(
                label='JSONL lines {"question", "answer", "doc" (optional), "page" (optional)}',
                file_types=[".jsonl"],
                elem_id="ev-upload",
            )
            count = gr.Number(
                label="Questions to write from the collection",
                value=10,
                precision=0,
                visible=False,
                elem_id="ev-count",
            )
        with gr.Column():
            collection = gr.Dropdown(label="Collection", choices=[], elem_id="ev-collection")
            models = gr.Dropdown(
                label="Models",
                choices=model_choices(services),
                value=[name] if (name := default_model_name(services)) else [],
                multiselect=True,
                elem_id="ev-models",
            )
            modes = gr.CheckboxGroup(
                list(MODES), value=list(MODES), label="Answer", elem_id="ev-modes"
            )
            with gr.Row():
                run = gr.Button("Compare", variant="primary", elem_id="ev-run")
                stop = gr.Button("Cancel", variant="stop", elem_id="ev-cancel")
    status = gr.Markdown(elem_id="ev-status")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="ev-table")
    chart = gr.BarPlot(
        x="run",
        y="f1",
        color="retrieval",
        label=CHART_LABEL,
        x_title="Model (retrieval)",
        y_title="Token F1",
        color_title="Retrieval",
        y_lim=[0, 1],
        elem_id="ev-chart",
    )

    def refresh(current: str | None, chosen: list[str] | None) -> tuple[Any, ...]:
        names = [value for _, value in collection_choices(services) if value]
        offered = model_choices(services)
        kept = [m for m in chosen or [] if m in {value for _, value in offered}]
        return (
            gr.update(
                choices=names, value=current if current in names else (names[0] if names else None)
            ),
            gr.update(choices=offered, value=kept),
        )

    def questions(
        how: str, file: str | None, n: float | None, name: str, report: Any
    ) -> tuple[list[QAItem], Path | None]:
        if how == SOURCES[0]:
            if not file:
                raise gr.Error("upload a JSONL file of questions with reference answers")
            return load_qa(Path(file), need_answer=True), None
        model = services.models.get(default_model_name(services))
        items, chunks = generate_qa(
            services.store,
            model,
            name,
            max_pairs=max(1, int(n or 10)),
            progress=report,
            cancel=cancel,
        )
        return items, write_qa(items, new_set_path(settings.runs_dir / "eval", name), chunks)

    def on_run(
        how: str,
        file: str | None,
        n: float | None,
        name: str | None,
        chosen: list[str] | None,
        answer_modes: list[str] | None = None,
        bar: gr.Progress = gr.Progress(),
    ) -> tuple[Any, ...]:
        if not name:
            raise gr.Error("pick a collection (add documents in the Documents tab)")
        if not chosen:
            raise gr.Error("pick at least one model")
        picked = list(MODES) if answer_modes is None else answer_modes
        if not picked:
            raise gr.Error("pick with retrieval, without, or both")
        cancel.clear()

        def report(done: int, total: int, message: str) -> None:
            bar((done, total), desc=message)

        try:
            items, written = questions(how, file, n, name, report)
            result = compare_models(
                services,
                items,
                name,
                chosen,
                params=params_from_settings(settings, temperature=0.0, seed=0),
                modes=[MODES[m] for m in MODES if m in picked],
                progress=report,
                cancel=cancel,
            )
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        return summary(result, written), table_rows(result), chart_frame(result)

    source.change(
        lambda how: (gr.update(visible=how == SOURCES[0]), gr.update(visible=how != SOURCES[0])),
        source,
        [upload, count],
        api_name=False,
    )
    tab.select(refresh, [collection, models], [collection, models], api_name=False)
    run.click(
        on_run,
        [source, upload, count, collection, models, modes],
        [status, table, chart],
        api_name="evaluate_compare",
    )
    stop.click(cancel.set, None, None, api_name=False)
