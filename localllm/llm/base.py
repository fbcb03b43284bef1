"""The interface every text generator implements: in-process llama.cpp today, remote servers later."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    repeat_penalty: float = 1.1
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None


FinishReason = Literal["stop", "length"]


@dataclass
class GenerationStats:
    """One answer's record: what it cost (`finish_reason` "length" when max_tokens or the context
    cut it), and `cancel`, which ends the answer at its next token when set (a client gone, Stop)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds_to_first_token: float = 0.0
    seconds_total: float = 0.0
    trimmed_messages: int = 0
    finish_reason: FinishReason = "stop"
    cancel: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)


class ChatModel(Protocol):
    name: str
    last_stats: GenerationStats  # the latest answer's, whoever asked: pass `stats` to own one

    @property
    def context_length(self) -> int: ...

    def stream_chat(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        stats: GenerationStats | None = None,
    ) -> Iterator[str]:
        """Yield the answer's text piece by piece; the conversation is trimmed to fit first.

        `stats`, when given, is filled in as the answer is made (safe with other callers)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the whole templated conversation takes, ready for the answer."""
        ...

    def answer_budget(self, params: GenerationParams) -> int:
        """Prompt tokens allowed, leaving room for the answer."""
        ...

    def choice_logits(self, messages: Sequence[Message], options: Sequence[str]) -> list[float]:
        """The model's score for each option as the first token of its answer."""
        ...

    def describe(self) -> str:
        """One line for the UI: which model, where it runs, its context."""
        ...

    def close(self) -> None: ...
