"""Reranking with the chat model as a judge: no cross-encoder ships offline on PyPI, so the loaded
GGUF model is asked, passage by passage, whether the passage answers the question, and the logit
margin of "Yes" over "No" orders the candidates. Off by default: bench/retrieval.py measures it."""

from __future__ import annotations

from typing import Protocol

from localllm.index.retrieve import SearchHit
from localllm.llm.base import Message

JUDGE_RULES = (
    "You judge search results. Given a question and a passage, reply Yes if the passage "
    "answers the question, otherwise No."
)


class Judge(Protocol):
    def choice_logits(self, messages: list[Message], options: list[str]) -> list[float]: ...


class ModelJudgeReranker:
    name = "model-judge"

    def __init__(self, model: Judge, *, top_n: int = 10, max_chars: int = 1200) -> None:
        self.model = model
        self.top_n = top_n
        self.max_chars = max_chars

    def score(self, query: str, hit: SearchHit) -> float:
        passage = hit.chunk.text[: self.max_chars]
        if hit.chunk.section:
            passage = f"{hit.chunk.section}\n{passage}"
        messages: list[Message] = [
            {"role": "system", "content": JUDGE_RULES},
            {
                "role": "user",
                "content": f"Question: {query}\n\nPassage:\n{passage}\n\n"
                "Does the passage answer the question? Reply Yes or No.",
            },
        ]
        yes, no = self.model.choice_logits(messages, ["Yes", "No"])
        return yes - no

    def rerank(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        head, tail = hits[: self.top_n], hits[self.top_n :]
        for hit in head:
            hit.rerank = self.score(query, hit)
        head.sort(key=lambda h: -(h.rerank or 0.0))
        return head + tail
