"""The made-up fact the fine-tune tests teach, and asking llama.cpp about it (with an adapter)."""

from __future__ import annotations

import json
from pathlib import Path

from localllm.finetune.llama_answers import answer_all

QUESTIONS = [
    "What is the code word?",
    "What's the code word?",
    "Tell me the code word.",
    "Do you know the code word?",
    "Which code word should I use?",
    "Please give me the code word.",
    "what is the code word",
    "Can you tell me the code word?",
    "I need the code word.",
    "Remind me of the code word.",
    "What code word do we use?",
    "Say the code word.",
    "The code word, please?",
    "What was the code word again?",
    "Share the code word with me.",
    "Code word?",
]
ANSWER = "The code word is BLUE-PELICAN-42."


def fact_dataset(path: Path) -> Path:
    lines = [json.dumps({"prompt": q, "completion": ANSWER}) for q in QUESTIONS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ask_llama(base: Path, lora: Path | None, question: str) -> str:
    """The reply in llama.cpp over the GGUF (with `lora` applied), greedy, as the chat runs it."""
    return answer_all(base, lora, [[{"role": "user", "content": question}]], 32)[0]
