"""The Fine-tune tab's "My documents" dataset: the chat model writes question/answer pairs from a
collection's passages, kept as plain examples or made grounded (finetune.grounded: the chat's own
prompt with retrieved sources, the answer citing [n], a share taught to decline)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localllm.errors import DatasetError
from localllm.finetune.data import write_jsonl
from localllm.finetune.from_documents import pairs_from_documents
from localllm.finetune.grounded import grounded_from_documents
from localllm.services import Services
from localllm.ui.chat_view import default_model_name

DOC_STYLES = [
    ("Questions and answers (plain examples)", "plain"),
    ("Answers from my documents (grounded: the chat's sources, citing [n])", "grounded"),
]


@dataclass
class DocumentsDataset:
    path: Path
    title: str  # what the summary line calls it
    max_length: int | None = None  # max tokens per example that trains on every example whole


def documents_dataset(
    services: Services,
    collection: str,
    path: Path,
    *,
    count: int,
    style: str,
    decline_share: float,
    progress: Callable[[int, int, str], None],
    cancel: threading.Event,
) -> DocumentsDataset:
    """Write the examples to `path`; raises a LocalLLMError (DatasetError when none was usable)."""
    model = services.models.get(default_model_name(services))
    count = max(1, count)
    if style == "grounded":
        grounded = grounded_from_documents(
            services,
            model,
            collection,
            max_pairs=count,
            decline_share=decline_share,
            progress=progress,
            cancel=cancel,
        )
        examples, skipped = grounded.examples, grounded.skipped
        title = (
            f"{len(examples)} grounded examples from {collection}, {grounded.declines} declining"
        )
        # the app's prompts with their sources are long: trained whole, not cut
        fits: int | None = grounded.max_length
    else:
        pairs = pairs_from_documents(
            services.store, model, collection, max_pairs=count, progress=progress, cancel=cancel
        )
        examples, skipped = pairs.examples, pairs.skipped
        title, fits = f"{len(examples)} pairs from {collection}", None
    if not examples:
        raise DatasetError(f"the model wrote no usable pairs ({'; '.join(skipped[:3])})")
    return DocumentsDataset(write_jsonl(examples, path), title, fits)
