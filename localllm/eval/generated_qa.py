"""A question set made from a collection, for `eval compare` when the user has none written.

The chat model writes a question and its answer for a spread of passages (the Fine-tune tab's
"from my documents" builder, finetune/from_documents.py), and each line keeps the file and page
it came from, so citations can be checked too. The set is saved in the eval format,
`{"question", "answer", "doc", "page", "chunk"}`, which the fine-tune loader does not take as
training examples: an eval set can't be trained on by mistake. It is a held-out set only when
the training data was not written from the same passages (see README, "Evaluate tab").
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from localllm.errors import DatasetError
from localllm.eval.metrics import QAItem
from localllm.finetune.from_documents import pairs_from_documents
from localllm.llm.base import ChatModel, GenerationParams

if TYPE_CHECKING:
    from localllm.index.store import DocumentStore


def generate_qa(
    store: DocumentStore,
    model: ChatModel,
    collection: str,
    *,
    max_pairs: int = 20,
    documents: Sequence[str] | None = None,
    params: GenerationParams | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[list[QAItem], list[str]]:
    """Up to `max_pairs` questions with reference answers, and the chunk id each came from;
    raises DatasetError when the model wrote none that could be used (or the collection has no
    passage to ask about)."""
    made = pairs_from_documents(
        store,
        model,
        collection,
        documents=documents,
        max_pairs=max_pairs,
        params=params,
        progress=progress,
        cancel=cancel,
    )
    items, chunks = [], []
    for example in made.examples:
        assert example.messages is not None
        question, answer = example.messages[0]["content"], example.messages[-1]["content"]
        source = example.source or {}
        pages, file = list(source.get("pages") or []), str(source.get("file") or "")
        page = int(pages[0]) if pages and file else None
        items.append(QAItem(question, file if page else None, page, answer=answer))
        chunks.append(str(source.get("chunk") or ""))
    if not items:
        why = "; ".join(made.skipped[:3]) or "no passage was asked about"
        raise DatasetError(f"the model wrote no usable question/answer pair ({why})")
    return items, chunks


def write_qa(items: Sequence[QAItem], path: str | Path, chunks: Sequence[str] = ()) -> Path:
    """The set as eval JSONL (written whole, then moved into place), readable with load_qa."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, item in enumerate(items):
        row: dict[str, object] = {"question": item.question, "answer": item.answer}
        if item.doc and item.page:
            row.update(doc=item.doc, page=item.page)
        if i < len(chunks) and chunks[i]:
            row["chunk"] = chunks[i]
        lines.append(json.dumps(row, ensure_ascii=False))
    partial = path.with_name(path.name + ".partial")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def new_set_path(folder: str | Path, collection: str) -> Path:
    """Where a set generated now from `collection` is saved: `folder/<collection>-<UTC time>.qa.jsonl`."""
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in collection) or "collection"
    return Path(folder) / f"{safe}-{stamp}.qa.jsonl"
