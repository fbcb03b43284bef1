"""The default engine: llama-cpp-python in this process."""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from localllm.errors import ModelBusyError, ModelLoadError, PromptTooLongError
from localllm.llm.base import GenerationParams, GenerationStats, Message
from localllm.llm.context import answer_budget, fit_to_context, refuse_oversized
from localllm.llm.repacking import install as install_repacking_choice
from localllm.llm.threads import apply_openmp_wait_policy, default_batch_threads, default_threads

# Must run before llama_cpp (and with it libgomp) is loaded.
apply_openmp_wait_policy()

import llama_cpp  # noqa: E402
from llama_cpp.llama_chat_format import (  # noqa: E402
    ChatFormatterResponse,
    Jinja2ChatFormatter,
    format_chatml,
)

install_repacking_choice()

log = logging.getLogger(__name__)

FALLBACK_TEMPLATE_WARNING = (
    "this model has no chat template in its GGUF metadata; using ChatML, which it may not follow"
)


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


def backend_name() -> str:
    """'CUDA', 'Metal', 'Vulkan', ... when this llama.cpp build can offload, else 'CPU'."""
    if not gpu_offload_supported():
        return "CPU"
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    for name in ("CUDA", "Metal", "Vulkan", "HIP", "SYCL", "OpenCL", "MUSA", "CANN"):
        if name.upper() in info.upper():
            return name
    return "GPU"


ZERO_WIDTH_JOINER = "\u200d"


def _control_tokens(llama: llama_cpp.Llama) -> re.Pattern[str] | None:
    """A pattern matching the text of the model's control tokens (<|im_start|>, </s>, ...)."""
    model = llama._model
    wanted = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    texts = set()
    for token in range(model.n_vocab()):
        if model.token_get_attr(token) & wanted:
            text = model.token_get_text(token)
            if len(text) >= 3 and not text.isspace():
                texts.add(text)
    if not texts:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(texts, key=len, reverse=True)))


@dataclass(frozen=True)
class _Generation:
    tokens: list[int]
    formatted: ChatFormatterResponse
    max_tokens: int


class LlamaCppChatModel:
    """A GGUF model loaded in llama.cpp, chatting through the model's own chat template."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        context_size: int = 4096,
        n_threads: int = 0,
        n_threads_batch: int = 0,
        n_gpu_layers: int = -1,
        lora_path: str | Path | None = None,
        wait_seconds: float = 300.0,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self.n_threads = n_threads or default_threads()
        self.n_threads_batch = n_threads_batch or default_batch_threads()
        self.n_gpu_layers = n_gpu_layers if gpu_offload_supported() else 0
        self.lora_path = Path(lora_path) if lora_path else None
        self._lock = threading.Lock()
        self.wait_seconds = wait_seconds  # longest an answer waits for the one before it
        self.last_stats = GenerationStats()
        try:
            self._llama: llama_cpp.Llama | None = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=context_size,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads_batch,
                n_gpu_layers=self.n_gpu_layers,
                lora_path=str(self.lora_path) if self.lora_path else None,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelLoadError(f"llama.cpp could not load {self.path.name}: {e}") from e
        self._control = _control_tokens(self._llama)
        meta = self._llama.metadata
        template = meta.get("tokenizer.chat_template")
        self.template_warning: str | None = None
        if template:
            eos, bos = self._llama.token_eos(), self._llama.token_bos()
            self._formatter: Any = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(eos),
                bos_token=self._token_text(bos),
                stop_token_ids=[eos],
            )
        else:
            self.template_warning = FALLBACK_TEMPLATE_WARNING
            log.warning("%s: %s", self.name, FALLBACK_TEMPLATE_WARNING)
            self._formatter = format_chatml

    @property
    def llama(self) -> llama_cpp.Llama:
        if self._llama is None:
            raise ModelLoadError(f"{self.name} was closed")
        return self._llama

    @property
    def context_length(self) -> int:
        return int(self.llama.n_ctx())

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llama.detokenize([token], special=True).decode("utf-8", errors="replace")

    def count_tokens(self, text: str) -> int:
        return len(
            self.llama.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=True)
        )

    def _render(self, messages: Sequence[Message]) -> tuple[list[int], ChatFormatterResponse]:
        # Text is tokenized with special tokens on (the template's markers must be), so a marker
        # written inside a message or a document would start a turn: it is broken up first.
        safe = [{**m, "content": self._defuse(m["content"])} for m in messages]
        formatted: ChatFormatterResponse = self._formatter(messages=safe)
        tokens = self.llama.tokenize(
            formatted.prompt.encode("utf-8", "replace"),
            add_bos=not formatted.added_special,
            special=True,
        )
        return tokens, formatted

    def _defuse(self, text: str) -> str:
        if self._control is None or not text:
            return text
        return self._control.sub(lambda m: m.group(0)[0] + ZERO_WIDTH_JOINER + m.group(0)[1:], text)

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the whole templated conversation takes, ready for the answer."""
        return len(self._render(messages)[0])

    def answer_budget(self, params: GenerationParams) -> int:
        return answer_budget(self.context_length, params)

    def stream_chat(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        stats: GenerationStats | None = None,
    ) -> Iterator[str]:
        refuse_oversized(messages, self.context_length)
        budget = self.answer_budget(params)
        kept = list(messages)
        tokens, formatted = self._render(kept)
        if len(tokens) > budget:
            kept = fit_to_context(messages, self.prompt_tokens, budget)
            tokens, formatted = self._render(kept)
        stats = stats if stats is not None else GenerationStats()
        stats.prompt_tokens, stats.trimmed_messages = len(tokens), len(messages) - len(kept)
        # The model is generated in a thread of its own that holds the lock, and the pieces come
        # through a queue: a reader that stops reading (a client gone) sets `cancel`, or is
        # collected, and the model is free at the next token, never held by a paused generator.
        pieces: queue.SimpleQueue[str | BaseException | None] = queue.SimpleQueue()
        job = _Generation(
            tokens, formatted, min(params.max_tokens, self.context_length - len(tokens))
        )
        worker = threading.Thread(
            target=self._generate, args=(job, params, stats, pieces), daemon=True
        )
        worker.start()
        finished = False
        try:
            while (piece := pieces.get()) is not None:
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
            finished = True
        finally:
            if not finished:
                stats.cancel.set()

    def _generate(
        self,
        job: _Generation,
        params: GenerationParams,
        stats: GenerationStats,
        pieces: queue.SimpleQueue[str | BaseException | None],
    ) -> None:
        formatted = job.formatted
        stops = [formatted.stop] if isinstance(formatted.stop, str) else list(formatted.stop or [])
        if not self._lock.acquire(timeout=self.wait_seconds):
            pieces.put(self._busy())
            pieces.put(None)
            return
        started = time.perf_counter()
        try:
            if stats.cancel.is_set():
                return
            stream = self.llama.create_completion(
                prompt=job.tokens,
                max_tokens=job.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                repeat_penalty=params.repeat_penalty,
                stop=[*stops, *params.stop],
                seed=params.seed,
                stopping_criteria=formatted.stopping_criteria,
                stream=True,
            )
            try:
                for chunk in stream:
                    if stats.cancel.is_set():
                        break
                    choice = chunk["choices"][0]  # type: ignore[index]
                    if choice.get("finish_reason") == "length":
                        stats.finish_reason = "length"
                    text = choice["text"]
                    if not text:
                        continue
                    if not stats.completion_tokens:
                        stats.seconds_to_first_token = time.perf_counter() - started
                    stats.completion_tokens += 1
                    pieces.put(text)
            finally:
                with contextlib.suppress(Exception):
                    stream.close()  # type: ignore[union-attr]
        except Exception as e:  # handed to the reader, raised in its thread
            pieces.put(e)
        finally:
            stats.seconds_total = time.perf_counter() - started
            self.last_stats = stats
            self._lock.release()
            pieces.put(None)

    def _busy(self) -> ModelBusyError:
        return ModelBusyError(
            f"{self.name} is still answering another request after {self.wait_seconds:.0f} s: "
            "try again in a moment"
        )

    def choice_logits(self, messages: Sequence[Message], options: Sequence[str]) -> list[float]:
        """The model's next-token logit for the first token of each option, as its answer to
        `messages` (one forward pass; the prompt's cached prefix is reused)."""
        tokens, _ = self._render(messages)
        firsts = [self.llama.tokenize(o.encode(), add_bos=False, special=False)[0] for o in options]
        seen: list[float] = []

        def capture(_ids: Any, scores: Any) -> Any:
            if not seen:
                seen.extend(float(scores[t]) for t in firsts)
            return scores

        if not self._lock.acquire(timeout=self.wait_seconds):
            raise self._busy()
        try:
            self.llama.create_completion(
                prompt=tokens,
                max_tokens=1,
                temperature=0.0,
                logits_processor=llama_cpp.LogitsProcessorList([capture]),
            )
        finally:
            self._lock.release()
        return seen

    def reply_logprobs(self, messages: Sequence[Message], reply: str) -> list[float]:
        """The log-probability of each token of `reply` as the model's answer to `messages` (the
        prompt's cached prefix is reused; the reply is scored in one pass per batch). Raises
        PromptTooLongError when the two do not fit the context window."""
        prompt, _ = self._render(messages)
        llama = self.llama
        target = llama.tokenize(reply.encode("utf-8", "replace"), add_bos=False, special=False)
        if not target:
            return []
        if len(prompt) + len(target) > self.context_length:
            raise PromptTooLongError(
                f"the question and its reference answer take {len(prompt) + len(target)} tokens, "
                f"more than the {self.context_length} of {self.name}'s context window"
            )
        # Row i of a batch's logits predicts the token after position i: the last prompt token
        # predicts the reply's first, and so on.
        fed = [prompt[-1], *target[:-1]]
        if not self._lock.acquire(timeout=self.wait_seconds):
            raise self._busy()
        try:
            cached = llama.input_ids[: llama.n_tokens].tolist()
            reuse, most = 0, min(len(cached), len(prompt) - 1)
            while reuse < most and cached[reuse] == prompt[reuse]:
                reuse += 1
            llama.n_tokens = reuse
            llama.eval(prompt[llama.n_tokens : -1])
            logprobs: list[float] = []
            for start in range(0, len(fed), llama.n_batch):
                part = fed[start : start + llama.n_batch]
                past = llama.n_tokens
                llama._batch.set_batch(batch=part, n_past=past, logits_all=True)
                llama._ctx.decode(llama._batch)
                llama.input_ids[past : past + len(part)] = part
                llama.n_tokens += len(part)
                logits = np.ctypeslib.as_array(
                    llama._ctx.get_logits(), shape=(len(part), llama.n_vocab())
                ).astype(np.float64)
                top = logits.max(axis=1)
                norm = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
                chosen = logits[np.arange(len(part)), target[start : start + len(part)]]
                logprobs.extend((chosen - norm).tolist())
            return logprobs
        finally:
            self._lock.release()

    def describe(self) -> str:
        parts = [
            self.name,
            f"backend: {backend_name()}",
            f"GPU layers: {self.n_gpu_layers}" if self.n_gpu_layers else "CPU only",
            f"threads: {self.n_threads} (prompt: {self.n_threads_batch})",
            f"context: {self.context_length} tokens",
        ]
        if self.template_warning:
            parts.append(f"warning: {self.template_warning}")
        return " · ".join(parts)

    def close(self) -> None:
        """Free the weights and the KV cache now, not whenever the garbage collector runs."""
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None
