"""Fine-tune tab: a dataset (a JSONL file, liked answers or the user's documents), a base model and
settings, Train / Cancel / Resume with live progress and loss, past runs, answers side by side, and
export of the tuned model back to the chat."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gradio as gr

from localllm.errors import LocalLLMError
from localllm.finetune import jobs
from localllm.finetune.data import LoadedDataset, liked_answers, load_jsonl, write_jsonl
from localllm.finetune.estimate import estimate, token_stats
from localllm.finetune.grounded import DECLINE_SHARE
from localllm.finetune.names import QUANT_CHOICES
from localllm.finetune.train_config import DEFAULTS
from localllm.llm.catalog import list_models, resolve
from localllm.services import Services
from localllm.ui.chat import ChatTab
from localllm.ui.chat_view import collection_choices, default_model_name, model_choices
from localllm.ui.finetune_documents import DOC_STYLES, documents_dataset
from localllm.ui.finetune_dpo import PreferenceOffer, load_examples, method_settings
from localllm.ui.finetune_view import (
    LOSS_COLORS,
    LOSS_LABEL,
    PREVIEW_COLUMNS,
    RUN_COLUMNS,
    SAMPLE_COLUMNS,
    conversation_labels,
    dataset_summary,
    loss_frame,
    preview_rows,
    progress_html,
    run_choices,
    runs_table,
    sample_rows,
    status_markdown,
)

SOURCES = ["A JSONL file", "My liked answers", "My documents"]
METHODS = [("LoRA (full-precision base)", "lora"), ("QLoRA (4-bit base, less memory)", "qlora")]
PRECISIONS = ["auto", "on", "off"]


def _base_choices(services: Services) -> list[tuple[str, str]]:
    return [(label, name) for label, name in model_choices(services) if ".lora" not in name]


def _datasets_dir(services: Services) -> Path:
    folder = jobs.runs_dir(services.settings) / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def build_finetune_tab(services: Services, chat: ChatTab, demo: gr.Blocks) -> None:
    settings = services.settings
    build_cancel = threading.Event()
    dataset_path = gr.State("")
    current_run = gr.State("")

    gr.Markdown(
        "Teach the model you chat with from your own examples. Training runs on this machine; "
        "the result comes back to the Chat tab as a LoRA adapter over the same GGUF file."
    )
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown("### 1. Dataset")
            source = gr.Radio(SOURCES, value=SOURCES[0], label="Examples from")
            upload = gr.File(
                label="JSONL: messages, prompt/completion, instruction/input/output or text",
                file_types=[".jsonl"],
                elem_id="ft-upload",
            )
            liked = gr.Button("Use my liked answers", visible=False)
            with gr.Group(visible=False) as docs_group:
                collection = gr.Dropdown(label="Collection", choices=[])
                doc_style = gr.Radio(
                    DOC_STYLES, value="plain", label="Teach", elem_id="ft-doc-style"
                )
                max_pairs = gr.Number(label="Question/answer pairs to write", value=20, precision=0)
                decline_share = gr.Number(
                    label="Share of grounded examples given only unrelated sources, "
                    "taught to decline",
                    value=DECLINE_SHARE,
                    visible=False,
                )
                with gr.Row():
                    build = gr.Button("Write the pairs with the chat model")
                    stop_build = gr.Button("Stop", variant="stop")
            summary = gr.Markdown(elem_id="ft-summary")
        with gr.Column(scale=1):
            gr.Markdown("### 2. Model and settings")
            base = gr.Dropdown(
                label="Base model",
                choices=_base_choices(services),
                value=default_model_name(services),
            )
            method = gr.Radio(METHODS, value="lora", label="Method")
            preferences = PreferenceOffer(services, method)  # DPO, once there are enough pairs
            run_name = gr.Textbox(
                label="Run name (names the tuned model in the model lists; optional)",
                placeholder="e.g. debian-faq",
                max_length=120,
                elem_id="ft-name",
            )
            with gr.Accordion("Training settings", open=False):
                steps = gr.Number(label="Max steps", value=DEFAULTS["max_steps"], precision=0)
                epochs = gr.Number(label="Epochs (used when max steps is 0)", value=0)
                learning_rate = gr.Number(label="Learning rate", value=DEFAULTS["learning_rate"])
                rank = gr.Number(label="LoRA rank", value=DEFAULTS["rank"], precision=0)
                alpha = gr.Number(label="LoRA alpha", value=DEFAULTS["alpha"])
                batch = gr.Number(label="Batch size", value=DEFAULTS["batch_size"], precision=0)
                max_length = gr.Number(
                    label="Max tokens per example", value=DEFAULTS["max_length"], precision=0
                )
                rehearsal = gr.Number(
                    label="Rehearsal: the base's own general answers mixed in per example, "
                    "so it forgets less (0: off)",
                    value=DEFAULTS["rehearsal"],
                )
                precision = gr.Radio(
                    PRECISIONS,
                    value=settings.finetune_bf16,
                    label="bf16 (auto: where the CPU or GPU computes it natively; off: fp32)",
                )
            estimate_md = gr.Markdown(elem_id="ft-estimate")
            with gr.Row():
                train_btn = gr.Button("Train", variant="primary", elem_id="ft-train")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="ft-cancel")
                resume_btn = gr.Button("Resume", elem_id="ft-resume")
    preview = gr.Dataframe(
        headers=PREVIEW_COLUMNS,
        interactive=False,
        wrap=True,
        label="Preview",
        elem_id="ft-preview",
        column_widths=["10%", "35%", "35%", "20%"],
    )

    gr.Markdown("### 3. Progress")
    progress = gr.HTML(elem_id="ft-progress")
    status = gr.Markdown(elem_id="ft-status")
    plot = gr.LinePlot(
        x="step",
        y="loss",
        color="series",
        color_map=LOSS_COLORS,
        label=LOSS_LABEL,
        height=260,
        elem_id="ft-loss",
    )
    samples = gr.Dataframe(
        headers=SAMPLE_COLUMNS,
        interactive=False,
        wrap=True,
        label="Held-out prompts and general questions, before and after",
        elem_id="ft-samples",
        column_widths=["20%", "16%", "32%", "32%"],  # else long answers push the last one out
    )
    timer = gr.Timer(2.0, active=False)

    gr.Markdown("### Runs")
    runs = gr.Dataframe(headers=RUN_COLUMNS, interactive=False, elem_id="ft-runs")
    with gr.Row():
        pick_run = gr.Dropdown(label="Show run", choices=[])
        quant = gr.Dropdown(list(QUANT_CHOICES), value="Q4_K_M", label="Merged model quantization")
        merge = gr.Button("Merge into a full GGUF")
    merge_status = gr.Markdown()

    # ------------------------------------------------------------------------------- dataset

    def shown(name: str, loaded: LoadedDataset, path: Path | str) -> tuple[Any, ...]:
        chats = conversation_labels(services.conversations, loaded.examples)
        return str(path), dataset_summary(name, loaded), preview_rows(loaded.examples, chats)

    def on_source(choice: str) -> tuple[Any, ...]:
        return (
            gr.update(visible=choice == SOURCES[0]),
            gr.update(visible=choice == SOURCES[1]),
            gr.update(visible=choice == SOURCES[2]),
            gr.update(choices=[c for c in collection_choices(services) if c[1]]),
        )

    def on_upload(file: str | None) -> tuple[Any, ...]:
        if not file:
            return "", "", []
        loaded = load_examples(file)  # preference pairs too
        if not loaded.examples:
            raise gr.Error(f"{Path(file).name}: no usable examples. {loaded.summary()}")
        return shown(Path(file).name, loaded, file)

    def on_liked() -> tuple[Any, ...]:
        examples = liked_answers(services.conversations)
        if not examples:
            raise gr.Error("no liked answers yet: give answers a thumbs up in the Chat tab")
        path = write_jsonl(examples, _datasets_dir(services) / f"liked-{_stamp()}.jsonl")
        return shown("Liked answers", load_jsonl(path), path)

    def on_build(
        name: str | None,
        count: float | None,
        style: str,
        share: float | None,
        length: float | None,
        bar: gr.Progress = gr.Progress(),
    ) -> Any:
        if not name:
            raise gr.Error("pick a collection of documents")
        build_cancel.clear()

        def report(done: int, total: int, message: str) -> None:
            bar((done, total), desc=message)

        try:
            made = documents_dataset(
                services,
                name,
                _datasets_dir(services) / f"{style}-{name}-{_stamp()}.jsonl",
                count=int(count or 20),
                style=style,
                decline_share=float(share or 0),
                progress=report,
                cancel=build_cancel,
            )
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        fits = max(made.max_length, int(length or 0)) if made.max_length else gr.update()
        return (*shown(made.title, load_jsonl(made.path), made.path), fits)

    # ------------------------------------------------------------------------- estimate, runs

    def on_estimate(
        path: str, model: str | None, how: str, n: float, n_batch: float, length: float
    ) -> str:
        if not path or not model:
            return "Pick a dataset and a base model to see an estimate."
        try:
            info = resolve(settings, model)
            loaded = load_examples(path)
            mean, truncated = token_stats(info.path, loaded.examples, int(length or 1))
        except LocalLLMError as e:
            return f"No estimate: {e}"
        guess = estimate(
            info.parameters or 0,
            **method_settings(how),
            steps=int(n or 0) or len(loaded.examples) // max(1, int(n_batch or 1)),
            batch_size=int(n_batch or 1),
            mean_tokens=mean,
            max_length=int(length or 1),
            base_cached=jobs.base_prepared(settings, info),
        )
        text = f"Estimate: {guess.describe()}."
        if truncated:
            text += f" {truncated} examples are longer than {int(length)} tokens and will be cut."
        return text

    def view(run_id: str) -> tuple[Any, ...]:
        listing = jobs.list_runs(settings)
        run = next((r for r in listing if r.id == run_id), None)
        metrics = jobs.metrics(settings, run_id) if run else []
        shown_samples = jobs.samples(settings, run_id) if run else []
        general = jobs.samples(settings, run_id, "general") if run else []
        return (
            progress_html(run),
            status_markdown(run),
            loss_frame(metrics),
            sample_rows(shown_samples, general),
            runs_table(listing),
            gr.update(choices=run_choices(listing), value=run_id or None),
            gr.Timer(active=bool(run and run.active)),
            gr.update(choices=model_choices(services)),
        )

    def on_train(
        path: str,
        model: str | None,
        how: str,
        n: float,
        n_epochs: float,
        lr: float,
        r: float,
        a: float,
        n_batch: float,
        length: float,
        share: float,
        bf16: str,
        name: str,
    ) -> tuple[Any, ...]:
        if not path:
            raise gr.Error("pick a dataset first")
        try:
            run_id, _ = jobs.create_run(
                settings,
                path,
                base=model,
                name=name,
                **method_settings(how),
                max_steps=int(n or 0),
                epochs=float(n_epochs or 0) or None,
                learning_rate=lr,
                rank=int(r),
                alpha=a,
                batch_size=int(n_batch),
                max_length=int(length),
                rehearsal=float(share or 0),
                bf16=bf16,
            )
            jobs.start(settings, run_id)
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        return (run_id, *view(run_id))

    def on_cancel(run_id: str) -> tuple[Any, ...]:
        if not run_id:
            raise gr.Error("no run selected")
        jobs.cancel(settings, run_id)
        return view(run_id)

    def on_resume(run_id: str) -> tuple[Any, ...]:
        if not run_id:
            raise gr.Error("pick a run to resume")
        try:
            jobs.start(settings, run_id, resume=True)
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        return view(run_id)

    def on_merge(
        run_id: str, quantization: str, bar: gr.Progress = gr.Progress()
    ) -> tuple[Any, ...]:
        from localllm.finetune.outputs import export_run

        if not run_id:
            raise gr.Error("pick a finished run")
        try:
            done = export_run(
                settings, run_id, quant=quantization, progress=lambda f, m: bar(f, desc=m)
            )
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        merged = Path(done["merged_gguf"])
        names = {m.name for m in list_models(settings)}
        note = "" if merged.name in names else " (not in the models folder)"
        return f"Wrote **{merged.name}**{note}.", gr.update(choices=model_choices(services))

    dataset_outputs = [dataset_path, summary, preview]
    view_outputs = [progress, status, plot, samples, runs, pick_run, timer, chat.model]
    settings_inputs = [dataset_path, base, method, steps, batch, max_length]

    source.change(on_source, source, [upload, liked, docs_group, collection], api_name=False)
    doc_style.change(
        lambda style: gr.update(visible=style == "grounded"),
        doc_style,
        decline_share,
        api_name=False,
    )
    upload.change(on_upload, upload, dataset_outputs, api_name=False)
    liked.click(on_liked, None, dataset_outputs, api_name="dataset_liked")
    build.click(
        on_build,
        [collection, max_pairs, doc_style, decline_share, max_length],
        [*dataset_outputs, max_length],
        api_name="dataset_documents",
    )
    stop_build.click(build_cancel.set, None, None, api_name=False)
    for trigger in (dataset_path, base, method, steps, batch, max_length):
        trigger.change(on_estimate, settings_inputs, estimate_md, api_name=False)
    train_btn.click(
        on_train,
        [
            *(dataset_path, base, method, steps, epochs, learning_rate, rank, alpha, batch),
            *(max_length, rehearsal, precision, run_name),
        ],
        [current_run, *view_outputs],
        api_name="train",
    )
    cancel_btn.click(on_cancel, current_run, view_outputs, api_name="cancel_run")
    resume_btn.click(on_resume, current_run, view_outputs, api_name="resume_run")
    timer.tick(view, current_run, view_outputs, api_name=False)
    pick_run.input(lambda r: (r, *view(r)), pick_run, [current_run, *view_outputs], api_name=False)
    merge.click(on_merge, [current_run, quant], [merge_status, chat.model], api_name="merge_run")
    demo.load(view, current_run, view_outputs, api_name=False)
    preferences.wire(demo, dataset_outputs, steps, learning_rate)
