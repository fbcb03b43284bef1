"""A GGUF's chat template, rendered the way llama.cpp renders it, for training text.

Jinja and gguf load only when a template is built, so the app starts without them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from localllm.errors import DatasetError, ModelLoadError
from localllm.llm.base import Message

ChatTemplateFn = Callable[[Sequence[Message]], str]


def chatml(messages: Sequence[Message]) -> str:
    """ChatML, laid out as llama_cpp's format_chatml does: the app's fallback for a GGUF with no
    chat template, so a model trained on this text is prompted the same way at chat time."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    parts = [f"<|im_start|>system\n{system}<|im_end|>\n"]
    parts += [
        f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
        for m in messages
        if m["role"] != "system"
    ]
    return "".join(parts)


class ChatTemplate:
    """A GGUF's `tokenizer.chat_template` (Jinja), rendered as llama_cpp's Jinja2ChatFormatter does
    (sandboxed, trim_blocks, lstrip_blocks, loopcontrols, {% generation %} ignored, tojson as in
    transformers), but with add_generation_prompt=False: the whole conversation, answer included."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "", name: str = ""):
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class IgnoreGenerationTags(jinja2.ext.Extension):
            tags = {"generation"}  # noqa: RUF012 (jinja's own class attribute)

            def parse(self, parser: Any) -> Any:
                parser.stream.skip(1)
                return parser.parse_statements(("name:endgeneration",), drop_needle=True)

        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.name = name
        self._errors: tuple[type[Exception], ...] = (
            jinja2.TemplateError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
        )
        env = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[IgnoreGenerationTags, jinja2.ext.loopcontrols],
        )
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as e:
            raise ModelLoadError(
                f"the chat template of {name or 'this model'} is broken: {e}"
            ) from e

    def __call__(self, messages: Sequence[Message]) -> str:
        def raise_exception(message: str) -> None:
            raise ValueError(message)

        try:
            return self._template.render(
                messages=[dict(m) for m in messages],
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=False,
                raise_exception=raise_exception,
                strftime_now=lambda f: datetime.now().strftime(f),
            )
        except self._errors as e:
            raise DatasetError(
                f"the chat template of {self.name or 'the model'} refused it: {e}"
            ) from e


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def template_from_gguf(path: str | Path) -> ChatTemplateFn:
    """The chat template of the GGUF at `path`, read from its header (fast, no model load).

    A model with no template gets `chatml`, the same fallback the app chats with; `result is chatml`
    tells the caller to say so. Raises ModelLoadError when the file or its template is broken.
    """
    from localllm.llm.gguf_header import GGUFFormatError, read_header, token_texts

    path = Path(path)
    try:
        header = read_header(path)
    except (OSError, GGUFFormatError) as e:
        raise ModelLoadError(f"can't read the chat template of {path.name}: {e}") from e
    source = header.metadata.get("tokenizer.chat_template")
    if not isinstance(source, str) or not source.strip():
        return chatml
    ids = {name: header.metadata.get(f"tokenizer.ggml.{name}_token_id") for name in ("bos", "eos")}
    texts = token_texts(path, {i for i in ids.values() if isinstance(i, int)})
    return ChatTemplate(
        source,
        bos_token=texts.get(ids["bos"], "") if isinstance(ids["bos"], int) else "",
        eos_token=texts.get(ids["eos"], "") if isinstance(ids["eos"], int) else "",
        name=path.name,
    )


def template_from_hf(folder: str | Path) -> ChatTemplateFn:
    """The chat template of a Hugging Face model folder (chat_template.jinja or tokenizer_config.json)."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    jinja_file = folder / "chat_template.jinja"
    source = jinja_file.read_text(encoding="utf-8") if jinja_file.is_file() else None
    source = source or config.get("chat_template")
    if not isinstance(source, str) or not source.strip():
        return chatml

    def token(key: str) -> str:
        value = config.get(key) or ""
        return str(value.get("content", "")) if isinstance(value, dict) else str(value)

    return ChatTemplate(
        source, bos_token=token("bos_token"), eos_token=token("eos_token"), name=folder.name
    )


def template_for(base_gguf: str | None, base_hf: str | None) -> ChatTemplateFn:
    """The template a run's examples are rendered with: its GGUF's, else its HF folder's."""
    if base_gguf:
        return template_from_gguf(base_gguf)
    return template_from_hf(str(base_hf))
