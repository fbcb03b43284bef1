"""Conversations as message lists: the system prompt, and trimming to fit a context window."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from localllm.errors import PromptTooLongError
from localllm.llm.base import GenerationParams, Message


def with_system(messages: Sequence[Message], system_prompt: str | None) -> list[Message]:
    """The conversation with the given system prompt first (replacing any earlier one)."""
    rest = [m for m in messages if m["role"] != "system"]
    if system_prompt and system_prompt.strip():
        return [{"role": "system", "content": system_prompt}, *rest]
    return rest


def answer_budget(context_length: int, params: GenerationParams) -> int:
    """Prompt tokens allowed: the context less room for the answer (at most half the context)."""
    return context_length - min(params.max_tokens, context_length // 2)


# No tokenizer packs more characters than this into a token of ordinary text: a message longer than
# this many characters per token of context cannot fit, and is refused before it is tokenized
# (tokenizing a megabyte takes seconds).
MAX_CHARS_PER_TOKEN = 16


def refuse_oversized(messages: Sequence[Message], context_length: int) -> None:
    """Raise PromptTooLongError at once for a message that cannot fit in the context."""
    longest = max((len(m["content"]) for m in messages), default=0)
    if longest > context_length * MAX_CHARS_PER_TOKEN:
        raise PromptTooLongError(
            f"a message of {longest:,} characters is far more than this model's context window "
            f"of {context_length:,} tokens holds: shorten it, or attach it as a document instead"
        )


def fit_to_context(
    messages: Sequence[Message], prompt_tokens: Callable[[Sequence[Message]], int], budget: int
) -> list[Message]:
    """Drop the oldest turns until the prompt fits in `budget` tokens.

    The system prompt and the last message are always kept; the earliest kept turn starts with a user
    message so the roles still alternate. Raises PromptTooLongError when even that is too long.
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system) :])
    if not turns:
        return list(system)
    if prompt_tokens(messages) <= budget:
        return list(messages)

    # Candidate cut points: indexes where a kept tail may start (a user message, or the last message).
    starts = [i for i, m in enumerate(turns) if m["role"] == "user" and i > 0] or [len(turns) - 1]
    if starts[-1] != len(turns) - 1 and turns[-1]["role"] != "user":
        starts.append(len(turns) - 1)
    lo, hi = 0, len(starts) - 1  # binary search for the earliest start that fits
    best: int | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        if prompt_tokens(system + turns[starts[mid] :]) <= budget:
            best, hi = starts[mid], mid - 1
        else:
            lo = mid + 1
    if best is None:
        needed = prompt_tokens([*system, turns[-1]])
        raise PromptTooLongError(
            f"the message needs {needed} tokens but only {budget} fit in this model's context "
            "window after room for the answer: shorten it, lower max tokens, or raise the "
            "context size"
        )
    return system + turns[best:]
