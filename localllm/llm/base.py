"""The interface every text generator implements: in-process llama.cpp today, remote servers later."""

from __future__ import annotations

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


class ChatModel(Protocol):
    name: str

    @property
    def context_length(self) -> int: ...

    def stream_chat(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]:
        """Yield the answer's text piece by piece; the conversation is trimmed to fit first."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the whole templated conversation takes, ready for the answer."""
        ...

    def answer_budget(self, params: GenerationParams) -> int:
        """Prompt tokens allowed, leaving room for the answer."""
        ...

    def close(self) -> None: ...
