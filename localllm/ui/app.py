"""The Blocks of the app, its queue, and launch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from localllm.api import build_router
from localllm.auth import AuthStore, is_local
from localllm.config import Settings
from localllm.services import Services
from localllm.spaces import SESSION_CAPACITY, on_spaces, prepare_space
from localllm.ui.chat import build_chat_tab
from localllm.ui.chat_view import collection_choices
from localllm.ui.documents import build_documents_tab
from localllm.ui.finetune import build_finetune_tab
from localllm.ui.models import build_models_tab

log = logging.getLogger(__name__)

# System fonts only: nothing is fetched from a font host, so an air-gapped browser renders at once.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
)


def build_app(services: Services) -> gr.Blocks:
    with gr.Blocks(title="LocalLLM", analytics_enabled=False) as demo:
        gr.Markdown("## LocalLLM · private chat with local models")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat") as chat_tab:
                chat = build_chat_tab(services)
            with gr.Tab("Documents", id="documents"):
                build_documents_tab(services, demo)
            with gr.Tab("Models", id="models"):
                build_models_tab(services, chat, demo)
            with gr.Tab("Fine-tune", id="finetune"):
                build_finetune_tab(services, chat, demo)
        chat_tab.select(
            lambda: gr.update(choices=collection_choices(services)),
            None,
            chat.collection,
            api_name=False,
        )
    return demo


def launch(
    settings: Settings, *, host: str | None = None, port: int | None = None, block: bool = True
) -> tuple[gr.Blocks, Services]:
    services = Services(settings)
    spaces = on_spaces()
    if spaces:
        prepare_space(services, Path(__file__).resolve().parents[2])
    demo = build_app(services)
    demo.queue(default_concurrency_limit=1)
    kwargs: dict[str, Any] = {
        "server_name": host or settings.host,
        "server_port": port or settings.port,
        "theme": THEME,
        "show_error": True,
        "prevent_thread_lock": True,
        "footer_links": ["api", "settings"],
        "max_file_size": f"{settings.max_upload_mb}mb",
    }
    if spaces:
        kwargs["state_session_capacity"] = SESSION_CAPACITY
    access = AuthStore(settings.auth_path)
    if access.enabled:
        kwargs["auth"] = access.check_user
        kwargs["auth_message"] = "LocalLLM: sign in"
        if not access.users():
            log.warning("API keys are set but no UI user: add one with `localllm auth add-user`")
    elif not is_local(kwargs["server_name"]):
        log.warning(
            "LocalLLM is listening on %s with no login: anyone who can reach this address can "
            "read your documents and use the model. Add a user and an API key with "
            "`localllm auth add-user NAME` and `localllm auth add-key NAME`.",
            kwargs["server_name"],
        )
    demo.launch(**kwargs)
    demo.app.include_router(build_router(services))
    if block:
        demo.block_thread()
    return demo, services
