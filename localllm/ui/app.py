"""The Blocks of the app: its tabs, and the theme it is drawn with."""

from __future__ import annotations

import gradio as gr

from localllm.services import Services
from localllm.ui.chat import build_chat_tab
from localllm.ui.chat_view import collection_choices, page_state
from localllm.ui.documents import build_documents_tab
from localllm.ui.evaluate import build_evaluate_tab
from localllm.ui.finetune import build_finetune_tab
from localllm.ui.layout import APPLY_THEME, TOGGLE_THEME
from localllm.ui.models import build_models_tab

# System fonts only: nothing is fetched from a font host, so an air-gapped browser renders at once.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
)


def build_app(services: Services) -> gr.Blocks:
    with gr.Blocks(title="LocalLLM", analytics_enabled=False) as demo:
        with gr.Row(elem_id="header"):
            gr.Markdown("## LocalLLM · private chat with local models")
            theme = gr.Button("◐ Dark / light", size="sm", scale=0, elem_id="theme-toggle")
        theme.click(None, None, None, js=TOGGLE_THEME, api_name=False)
        with gr.Tabs():
            with gr.Tab("Chat", id="chat") as chat_tab:
                chat = build_chat_tab(services)
            with gr.Tab("Documents", id="documents"):
                build_documents_tab(services, demo)
            with gr.Tab("Models", id="models"):
                build_models_tab(services, chat, demo)
            with gr.Tab("Fine-tune", id="finetune"):
                build_finetune_tab(services, chat, demo)
            with gr.Tab("Evaluate", id="evaluate") as evaluate_tab:
                build_evaluate_tab(services, evaluate_tab)
        chat_tab.select(
            lambda: gr.update(choices=collection_choices(services)),
            None,
            chat.collection,
            api_name=False,
        )
        # The page is built once at start: each load shows what was saved and loaded since.
        demo.load(
            lambda: page_state(services),
            None,
            [chat.conversations, chat.status, chat.collection],
            api_name=False,
        )
        demo.load(None, None, None, js=APPLY_THEME, api_name=False)
    return demo
