"""Chat tab: a conversation with the selected local model, streamed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from localllm.errors import LocalLLMError
from localllm.llm.base import Message
from localllm.llm.catalog import chat_models, resolve
from localllm.llm.conversation import with_system
from localllm.llm.llamacpp import gpu_offload_supported
from localllm.llm.manager import LoadOptions, params_from_settings
from localllm.services import Services


@dataclass
class ChatTab:
    model: gr.Dropdown
    status: gr.Markdown


def model_choices(services: Services) -> list[tuple[str, str]]:
    return [
        (f"{m.name} (bundled)" if m.bundled else m.name, m.name)
        for m in chat_models(services.settings)
    ]


def default_model_name(services: Services) -> str | None:
    try:
        return resolve(services.settings, None).name
    except LocalLLMError:
        choices = model_choices(services)
        return choices[0][1] if choices else None


def build_chat_tab(services: Services) -> ChatTab:
    settings = services.settings
    history = gr.State([])
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(
                label="Conversation",
                height=520,
                elem_id="chatbot",
                placeholder="Ask the local model anything. Nothing leaves this machine.",
                buttons=["copy"],
            )
            with gr.Row():
                message = gr.Textbox(
                    placeholder="Type a message and press Enter",
                    show_label=False,
                    scale=6,
                    elem_id="message",
                    autofocus=True,
                )
                send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                stop = gr.Button("Stop", variant="stop", scale=1, elem_id="stop")
            clear = gr.Button("Clear conversation", size="sm")
        with gr.Column(scale=1):
            model = gr.Dropdown(
                label="Model",
                choices=model_choices(services),
                value=default_model_name(services),
                elem_id="model",
            )
            status = gr.Markdown(services.models.describe_loaded(), elem_id="model-status")
            with gr.Accordion("Parameters", open=False):
                system = gr.Textbox(settings.system_prompt, label="System prompt", lines=3)
                temperature = gr.Slider(
                    0.0, 2.0, settings.temperature, step=0.05, label="Temperature"
                )
                top_p = gr.Slider(0.05, 1.0, settings.top_p, step=0.01, label="Top-p")
                max_tokens = gr.Slider(
                    16, 4096, settings.max_tokens, step=16, label="Max new tokens"
                )
                stop_text = gr.Textbox(
                    "", label="Stop sequences", lines=2, placeholder="one per line"
                )
                context_size = gr.Number(
                    settings.context_size, label="Context size (0 = model maximum)", precision=0
                )
                threads = gr.Number(
                    settings.n_threads, label="Threads (0 = automatic)", precision=0
                )
                gpu_layers = gr.Number(
                    settings.n_gpu_layers,
                    label="GPU layers (-1 = all)",
                    precision=0,
                    interactive=gpu_offload_supported(),
                    info=None if gpu_offload_supported() else "this llama.cpp build is CPU-only",
                )

    def respond(
        text: str,
        past: list[Message],
        model_name: str | None,
        system_prompt: str,
        temp: float,
        nucleus: float,
        new_tokens: float,
        stop_lines: str,
        ctx: float | None,
        n_threads: float | None,
        n_gpu: float | None,
    ) -> Iterator[tuple[Any, ...]]:
        if not text or not text.strip():
            yield past, past, text, gr.skip()
            return
        turn: list[Message] = [*past, {"role": "user", "content": text}]
        yield turn, turn, "", gr.skip()
        options = LoadOptions(
            int(ctx or 0), int(n_threads or 0), int(n_gpu if n_gpu is not None else -1)
        )
        params = params_from_settings(
            settings,
            temperature=float(temp),
            top_p=float(nucleus),
            max_tokens=int(new_tokens),
            stop=tuple(line for line in (stop_lines or "").splitlines() if line),
        )
        answer = ""
        try:
            engine = services.models.get(model_name, options)
            yield turn, turn, "", services.models.describe_loaded()
            for piece in engine.stream_chat(with_system(turn, system_prompt), params):
                answer += piece
                shown: list[Message] = [*turn, {"role": "assistant", "content": answer}]
                yield shown, shown, "", gr.skip()
        except LocalLLMError as e:
            yield past, past, text, services.models.describe_loaded()
            raise gr.Error(str(e)) from e

    inputs = [
        message,
        history,
        model,
        system,
        temperature,
        top_p,
        max_tokens,
        stop_text,
        context_size,
        threads,
        gpu_layers,
    ]
    outputs = [chatbot, history, message, status]
    submit = message.submit(respond, inputs, outputs, api_name="chat", concurrency_id="llm")
    click = send.click(respond, inputs, outputs, api_name=False, concurrency_id="llm")
    stop.click(None, None, None, cancels=[submit, click])
    clear.click(lambda: ([], []), None, [chatbot, history], api_name=False, cancels=[submit, click])
    chatbot.clear(lambda: [], None, history, api_name=False, cancels=[submit, click])
    return ChatTab(model=model, status=status)
