"""Models tab: the catalog, opt-in downloads from the Hub, and deletion."""

from __future__ import annotations

from typing import Any

import gradio as gr

from localllm.errors import LocalLLMError
from localllm.format import human_count, human_size
from localllm.llm.catalog import ModelInfo, delete_model, list_models
from localllm.llm.download import SUGGESTED, download_gguf
from localllm.services import Services
from localllm.ui.chat import ChatTab
from localllm.ui.chat_view import model_choices
from localllm.ui.confirm import confirm_delete

COLUMNS = [
    "Name",
    "Kind",
    "Architecture",
    "Parameters",
    "Quantization",
    "Context",
    "Chat template",
    "Size",
    "Status",
]


def _row(m: ModelInfo) -> list[str]:
    kind = f"LoRA adapter for {m.base}" if m.kind == "adapter" else "model"
    if m.bundled:
        kind += " (bundled)"
    template = "—" if m.kind == "adapter" else ("yes" if m.has_chat_template else "no")
    status = "ok" if m.ok else f"broken: {m.error}"
    return [
        m.name,
        kind,
        m.architecture or "?",
        human_count(m.parameters),
        m.quantization or "?",
        str(m.context_length or "?"),
        template,
        human_size(m.size_bytes),
        status,
    ]


def build_models_tab(services: Services, chat: ChatTab, demo: gr.Blocks) -> None:
    settings = services.settings

    def table() -> list[list[str]]:
        return [_row(m) for m in list_models(settings)]

    def deletable() -> list[str]:
        return [m.name for m in list_models(settings) if not m.bundled]

    gr.Markdown(
        f"Models folder: `{settings.models_dir.resolve()}` — drop `.gguf` files there and refresh."
    )
    catalog = gr.Dataframe(
        value=table(), headers=COLUMNS, interactive=False, wrap=True, elem_id="catalog"
    )
    refresh = gr.Button("Refresh", size="sm")

    with gr.Row():
        with gr.Column():
            gr.Markdown("### Download a GGUF from the Hugging Face Hub")
            if not settings.allow_downloads:
                gr.Markdown(
                    "Downloads are **off**: LocalLLM makes no network calls unless you opt in. "
                    "Start it with `LOCALLLM_ALLOW_DOWNLOADS=1` to enable this form."
                )
            suggested = gr.Dropdown(
                label="Suggested chat models (fill the fields below)",
                choices=[(f"{m.label} · {m.size}", m.file) for m in SUGGESTED],
                value=None,
                elem_id="suggested-models",
            )
            repo = gr.Textbox(label="Repository", placeholder="owner/name")
            filename = gr.Textbox(label="File", placeholder="model.Q4_K_M.gguf")
            download = gr.Button("Download", interactive=settings.allow_downloads)
            download_status = gr.Markdown()
        with gr.Column():
            gr.Markdown("### Delete a model file")
            to_delete = gr.Dropdown(label="File", choices=deletable())
            delete = confirm_delete("Delete", "delete-model")
            delete_status = gr.Markdown()

    def refreshed() -> tuple[Any, Any, Any]:
        choices = model_choices(services)
        return table(), gr.update(choices=deletable(), value=None), gr.update(choices=choices)

    def do_download(
        repo_id: str, name: str, progress: gr.Progress = gr.Progress()
    ) -> tuple[Any, ...]:
        def report(done: int, total: int | None) -> None:
            progress(
                (done, total) if total else None, desc=f"{human_size(done)} of {name}", unit="bytes"
            )

        try:
            info = download_gguf(settings, repo_id, name, progress=report)
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        return (f"Downloaded **{info.name}** ({human_size(info.size_bytes)}).", *refreshed())

    def to_delete_name(name: str | None) -> str:
        if not name:
            raise gr.Error("pick a file to delete")
        return name

    def do_delete(name: str | None) -> tuple[Any, ...]:
        if not name:
            raise gr.Error("pick a file to delete")
        if services.models.info is not None and services.models.info.name == name:
            services.models.close()
        try:
            delete_model(settings, name)
        except LocalLLMError as e:
            raise gr.Error(str(e)) from e
        return (f"Deleted **{name}**.", *refreshed())

    def fill(file: str | None) -> tuple[Any, Any]:
        chosen = next((m for m in SUGGESTED if m.file == file), None)
        if chosen is None:
            return gr.skip(), gr.skip()
        return chosen.repo, chosen.file

    suggested.change(fill, suggested, [repo, filename], api_name=False)
    listing = [catalog, to_delete, chat.model]
    refresh.click(refreshed, None, listing, api_name=False)
    demo.load(refreshed, None, listing, api_name=False)  # files dropped in since start show up
    download.click(do_download, [repo, filename], [download_status, *listing], api_name="download")
    delete.wire(
        to_delete_name,
        do_delete,
        [to_delete],
        [delete_status, *listing],
        api_name="delete_model",
        disarm_on=[to_delete],
    )
