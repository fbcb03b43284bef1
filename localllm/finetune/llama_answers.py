"""Replies from a GGUF (and optionally a LoRA over it) in llama.cpp: the before/after comparison and
the base's own answers that rehearsal trains on."""

from __future__ import annotations

from pathlib import Path

from localllm.llm.base import Message


def answer_all(
    base_gguf: str | Path,
    lora: str | Path | None,
    conversations: list[list[Message]],
    max_tokens: int,
) -> list[str]:
    """Each conversation's next reply from the GGUF (with `lora` applied, if given) in llama.cpp,
    greedy, exactly as the chat runs the model."""
    from llama_cpp import Llama

    from localllm.llm.repacking import install

    install()
    llm = Llama(
        model_path=str(base_gguf),
        lora_path=str(lora) if lora else None,
        n_ctx=2048,
        n_threads=1,
        seed=0,
        verbose=False,
    )
    try:
        out = []
        for messages in conversations:
            reply = llm.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                temperature=0.0,
                max_tokens=max_tokens,
                repeat_penalty=1.1,
            )
            out.append((reply["choices"][0]["message"]["content"] or "").strip())  # type: ignore[index]
        return out
    finally:
        llm.close()
