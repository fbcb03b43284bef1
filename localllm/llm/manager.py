"""The one owner of the loaded chat model: loads lazily, frees the old model on a switch."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from localllm.config import Settings
from localllm.llm.base import ChatModel, GenerationParams
from localllm.llm.catalog import ModelInfo, adapter_base, resolve
from localllm.llm.llamacpp import LlamaCppChatModel, backend_name
from localllm.llm.remote import RemoteChatModel


@dataclass(frozen=True)
class LoadOptions:
    context_size: int
    n_threads: int
    n_gpu_layers: int
    n_threads_batch: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> LoadOptions:
        return cls(
            settings.context_size,
            settings.n_threads,
            settings.n_gpu_layers,
            settings.n_threads_batch,
        )


class ModelManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._model: ChatModel | None = None
        self._key: tuple[str, LoadOptions] | None = None
        self.info: ModelInfo | None = None

    @property
    def loaded(self) -> ChatModel | None:
        return self._model

    def get(self, name: str | None = None, options: LoadOptions | None = None) -> ChatModel:
        """The model called `name`, loading it if needed (and freeing the one loaded before).

        Without `options`, a loaded model is used as it is: `name` None means the loaded model
        (else settings.default_model), and the loaded model by its name is not reloaded for the
        settings' options. With settings.llm_url, a model on that server instead: `name` if the
        server lists it, else the server's first model."""
        loaded = self._model
        if options is None and loaded is not None and name is None:
            return loaded
        chosen = options or LoadOptions.from_settings(self.settings)
        if self.settings.llm_url:
            return self._remote(name, chosen, keep=options is None)
        info = resolve(self.settings, name)
        base = adapter_base(self.settings, info) if info.kind == "adapter" else info
        key = (info.path, chosen)
        with self._lock:
            same_file = self._key is not None and self._key[0] == info.path
            if self._model is not None and (self._key == key or (options is None and same_file)):
                return self._model
            self._release()
            context = chosen.context_size or base.context_length or 4096
            if base.context_length:
                context = min(context, base.context_length)
            self._model = LlamaCppChatModel(
                base.path,
                lora_path=info.path if base is not info else None,
                name=info.name,
                context_size=context,
                n_threads=chosen.n_threads,
                n_threads_batch=chosen.n_threads_batch or self.settings.n_threads_batch,
                n_gpu_layers=chosen.n_gpu_layers,
                wait_seconds=self.settings.model_wait_seconds,
            )
            self._key, self.info = key, info
            return self._model

    def _remote(self, name: str | None, options: LoadOptions, *, keep: bool) -> ChatModel:
        url = str(self.settings.llm_url)
        key = (f"remote:{name or self.settings.default_model}", options)
        with self._lock:
            same = self._key is not None and self._key[0] == key[0]
            if self._model is not None and (self._key == key or (keep and same)):
                return self._model
            self._release()
            model = RemoteChatModel(
                url,
                name=name or self.settings.default_model,
                api_key=self.settings.llm_api_key,
                context_size=options.context_size,
            )
            self._model, self._key = model, key
            return model

    def _release(self) -> None:
        if self._model is not None:
            self._model.close()
        self._model, self._key, self.info = None, None, None

    def close(self) -> None:
        with self._lock:
            self._release()

    def describe_loaded(self) -> str:
        """One line for the UI: which model, backend, threads and context are active."""
        model = self._model
        if model is not None:
            return model.describe()
        if self.settings.llm_url:
            return f"No model loaded yet · remote: {self.settings.llm_url}"
        return f"No model loaded yet · backend: {backend_name()}"


def params_from_settings(settings: Settings, **overrides: object) -> GenerationParams:
    values: dict[str, object] = {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_tokens": settings.max_tokens,
        "repeat_penalty": settings.repeat_penalty,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GenerationParams(**values)  # type: ignore[arg-type]
