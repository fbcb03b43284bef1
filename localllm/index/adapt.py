"""Adapt a collection's embedder to its documents: questions generated from its passages, a short
training (MultipleNegativesRankingLoss, in its own process), the collection re-embedded beside
itself, hit@k on held-out questions before and after; then the user keeps or discards the result.

The collection is searched with its old embedder until `keep` switches it (index/adapt_vectors.py),
so a cancelled, failed or discarded adaptation changes nothing. The faces go through
localllm/adapt_embedder.py, which picks the question generator.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localllm.cpu import available_cores
from localllm.index import adapt_vectors
from localllm.index.adapt_pairs import (
    AdaptError,
    Generator,
    collection_passages,
    read_questions,
    split,
    spread,
    write_questions,
    write_training,
)
from localllm.index.adapt_run import Adaptation, adaptations, new_folder, save, train
from localllm.index.adapt_score import score
from localllm.index.adapt_train import MODEL_FOLDER, TrainingCancelled
from localllm.index.embed import Embedder
from localllm.index.onnx_backend import VARIANTS, artifact_path
from localllm.index.store import DocumentStore

MIN_TRAIN_PAIRS = 4


class AdaptCancelled(Exception):
    pass


@dataclass
class AdaptOptions:
    steps: int = 20
    batch_size: int = 16
    learning_rate: float = 2e-5
    held_out: float = 0.2
    max_passages: int = 200
    seed: int = 0
    # How far the tuned weights are moved back to the base (WiSE-FT); 0.5 kept the FAQ dev set
    # as it was and the held-out gain (bench/README.md, embedder_adapt).
    base_share: float = 0.5


# (stage, done, total): stages questions, before, train, build, embed, after
Progress = Callable[[str, int, int], None]


def pending(store: DocumentStore, collection: str) -> Adaptation | None:
    """The adaptation waiting for keep or discard, if any."""
    waiting = [a for a in adaptations(store.folder, collection) if a.state == "pending"]
    return waiting[-1] if waiting else None


def adapt(
    store: DocumentStore,
    embedder: Embedder,
    collection: str,
    generate: Generator,
    *,
    generator: str,
    options: AdaptOptions | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Adaptation:
    """Train, re-embed beside the old vectors and measure; the result is left pending.

    `embedder` is the app's (its backend, cache and threads are used for the tuned model too).
    Raises AdaptError for what can't be adapted, AdaptCancelled when should_stop() turned true
    (nothing is left behind)."""
    options = options or AdaptOptions()
    if options.steps < 1 or options.batch_size < 2:
        raise AdaptError("adapting needs at least 1 step and batches of at least 2 pairs")
    if not 0.0 <= options.base_share < 1.0:
        raise AdaptError(
            f"the base model's share must be at least 0 and below 1, not {options.base_share}"
        )
    if not 0.0 < options.held_out < 1.0:
        raise AdaptError(f"the held-out share must be between 0 and 1, not {options.held_out}")
    if embedder.cache_dir is None:
        raise AdaptError("adapting the embedder needs a cache folder for its accelerated model")
    store.collection(collection)  # a clear error for an unknown collection
    if pending(store, collection) is not None:
        raise AdaptError(
            f"collection {collection!r} has an adapted embedder waiting: keep or discard it first"
        )
    stop = should_stop or (lambda: False)
    report: Progress = progress or (lambda stage, done, total: None)
    current = embedder.for_collection(store, collection)
    info = store.collection(collection)
    chunks = {c.id: c for c in collection_passages(store, collection)}
    usable = len(spread(list(chunks.values()), options.max_passages))
    if usable < 2:
        raise AdaptError(
            f"collection {collection!r} has {usable} passage(s) long enough to ask about; "
            "adapting needs at least 2"
        )
    folder = new_folder(store.folder, collection)
    record = Adaptation(
        collection=collection,
        run=folder.name,
        base=info.embedder,
        shadow=adapt_vectors.shadow_name(info, folder.name[-15:].replace("-", "")),
        steps=options.steps,
        generator=generator,
    )
    clock = time.perf_counter()
    try:
        questions = generate(
            store, collection, options.max_passages, lambda d, t: report("questions", d, t), stop
        )
        questions = [q for q in questions if q.chunk_id in chunks]
        _check(stop)
        pairs = split(questions, options.held_out, options.seed)
        if len(pairs.train) < MIN_TRAIN_PAIRS or not pairs.held_out:
            raise AdaptError(
                f"only {len(questions)} usable questions came from {usable} passages; "
                f"adapting needs at least {MIN_TRAIN_PAIRS + 1}"
            )
        write_training(pairs.train, chunks, folder / "train.jsonl")
        write_questions(pairs.held_out, folder / "held_out.jsonl")
        record.pairs = {"train": len(pairs.train), "held_out": len(pairs.held_out)}
        record.seconds["questions"] = time.perf_counter() - clock
        report("before", 0, 1)
        record.before = score(store, info.chroma_name, current, pairs.held_out).to_dict()
        clock = time.perf_counter()
        status = train(
            folder,
            {
                "base": str(current.model_path),
                "steps": options.steps,
                "batch_size": options.batch_size,
                "learning_rate": options.learning_rate,
                "seed": options.seed,
                "base_share": options.base_share,
                "backend": embedder.backend,
                "cache_dir": str(embedder.cache_dir),
                "threads": available_cores(),
            },
            on_progress=report,
            should_stop=stop,
        )
        record.backend = str(status.get("backend", ""))
        record.seconds["train"] = float(status.get("train_seconds", 0.0))
        record.seconds["build"] = float(status.get("build_seconds", 0.0))
        tuned = embedder.for_model(folder / MODEL_FOLDER)
        clock = time.perf_counter()
        record.copied = adapt_vectors.build_shadow(
            store,
            collection,
            record.shadow,
            tuned,
            on_progress=lambda d, t: report("embed", d, t),
            should_stop=stop,
        )
        record.seconds["embed"] = time.perf_counter() - clock
        report("after", 0, 1)
        record.after = score(store, record.shadow, tuned, pairs.held_out).to_dict()
    except (TrainingCancelled, adapt_vectors.VectorsCancelled, AdaptCancelled) as e:
        _remove(store, embedder, record)
        raise AdaptCancelled(str(e)) from e
    except BaseException:
        _remove(store, embedder, record)
        raise
    record.state = "pending"
    save(store.folder, record)
    return record


def _check(stop: Callable[[], bool]) -> None:
    if stop():
        raise AdaptCancelled("cancelled while writing questions")


def keep(store: DocumentStore, embedder: Embedder, collection: str) -> Adaptation:
    """Switch the collection to the pending adapted embedder and drop its old vectors."""
    record = _waiting(store, collection)
    tuned = embedder.for_model(store.folder / record.model)
    record.old_vectors = adapt_vectors.switch(
        store, collection, record.shadow, record.copied, tuned, record.model
    )
    record.state = "kept"
    save(store.folder, record)
    adapt_vectors.drop(store, record.old_vectors)
    return record


def discard(store: DocumentStore, embedder: Embedder, collection: str) -> Adaptation:
    """Drop the pending adapted embedder and its vectors; the collection stays as it was."""
    record = _waiting(store, collection)
    _remove(store, embedder, record, keep_record=True)
    record.state = "discarded"
    save(store.folder, record)
    return record


def _waiting(store: DocumentStore, collection: str) -> Adaptation:
    store.collection(collection)
    record = pending(store, collection)
    if record is None:
        raise AdaptError(f"collection {collection!r} has no adapted embedder waiting")
    return record


def _remove(
    store: DocumentStore, embedder: Embedder, record: Adaptation, *, keep_record: bool = False
) -> None:
    """The shadow vectors, the tuned model and its accelerated files; the record and the
    questions stay when `keep_record` (a discarded run can still be read back)."""
    adapt_vectors.drop(store, record.shadow)
    folder = store.folder / "embedders" / record.run
    model = folder / MODEL_FOLDER
    if model.is_dir():
        embedder.for_model(model).close()
        if embedder.cache_dir is not None:
            for variant in VARIANTS:
                artifact_path(model, embedder.cache_dir, variant).unlink(missing_ok=True)
    if keep_record:
        shutil.rmtree(model, ignore_errors=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def held_out_questions(store_folder: Path, record: Adaptation) -> list[str]:
    """The held-out questions of a run, as they were measured (never trained on)."""
    return [
        q.question
        for q in read_questions(store_folder / "embedders" / record.run / "held_out.jsonl")
    ]


__all__ = ["AdaptCancelled", "AdaptError", "AdaptOptions", "adapt", "discard", "keep", "pending"]
