"""The Chat tab's generation parameters: what a message is answered with, beside the defaults."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from localllm.config import Settings
from localllm.llm.llamacpp import gpu_offload_supported


@dataclass
class Parameters:
    system: gr.Textbox
    temperature: gr.Slider
    top_p: gr.Slider
    max_tokens: gr.Slider
    stop_text: gr.Textbox
    context_size: gr.Number
    threads: gr.Number
    gpu_layers: gr.Number

    @property
    def inputs(self) -> list[gr.components.Component]:
        """In the order the answer takes them."""
        return [
            self.system,
            self.temperature,
            self.top_p,
            self.max_tokens,
            self.stop_text,
            self.context_size,
            self.threads,
            self.gpu_layers,
        ]


def build_parameters(settings: Settings) -> Parameters:
    """The folded Parameters block, starting from the settings."""
    with gr.Accordion("Parameters", open=False):
        return Parameters(
            system=gr.Textbox(settings.system_prompt, label="System prompt (plain chat)", lines=3),
            temperature=gr.Slider(0.0, 2.0, settings.temperature, step=0.05, label="Temperature"),
            top_p=gr.Slider(0.05, 1.0, settings.top_p, step=0.01, label="Top-p"),
            max_tokens=gr.Slider(16, 4096, settings.max_tokens, step=16, label="Max new tokens"),
            stop_text=gr.Textbox("", label="Stop sequences", lines=2, placeholder="one per line"),
            context_size=gr.Number(
                settings.context_size, label="Context size (0 = model maximum)", precision=0
            ),
            threads=gr.Number(settings.n_threads, label="Threads (0 = automatic)", precision=0),
            gpu_layers=gr.Number(
                settings.n_gpu_layers,
                label="GPU layers (-1 = all)",
                precision=0,
                interactive=gpu_offload_supported(),
                info=None if gpu_offload_supported() else "this llama.cpp build is CPU-only",
            ),
        )
