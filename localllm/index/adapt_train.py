"""`python -m localllm.index.adapt_train RUN_DIR`: the embedder's training, in its own process.

Reads RUN_DIR/config.json (written by index/adapt_run.py) and RUN_DIR/train.jsonl ({"question",
"passage"} lines), trains the sentence-transformers model with MultipleNegativesRankingLoss (each
question's passage is its positive, the other passages of the batch its negatives), saves it to
RUN_DIR/model, then builds its accelerated (ONNX) embedder into the shared cache exactly as the app
builds the bundled one, so the app process opens it without torch. Writes RUN_DIR/progress.json as it
goes and RUN_DIR/status.json at the end; a file RUN_DIR/cancel stops it between steps.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

CANCEL_FILE = "cancel"
PROGRESS_FILE = "progress.json"
STATUS_FILE = "status.json"
MODEL_FOLDER = "model"


class TrainingCancelled(Exception):
    pass


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Replace `path` whole, so a reader never sees half a file."""
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(part, path)


def read_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            pairs.append((str(row["question"]), str(row["passage"])))
    return pairs


def batches(
    pairs: list[tuple[str, str]], size: int, steps: int, seed: int
) -> list[list[tuple[str, str]]]:
    """`steps` batches in epochs of a fresh shuffle; no passage twice in a batch, since the
    loss would take its second question's passage for a wrong answer."""
    rng = random.Random(seed)
    out: list[list[tuple[str, str]]] = []
    pool: list[tuple[str, str]] = []
    while len(out) < steps:
        batch: list[tuple[str, str]] = []
        seen: set[str] = set()
        deferred: list[tuple[str, str]] = []
        while len(batch) < size:
            if not pool:
                pool = pairs[:]
                rng.shuffle(pool)
                if batch and all(p in seen for _, p in pool):
                    break
            pair = pool.pop()
            if pair[1] in seen:
                deferred.append(pair)
                continue
            batch.append(pair)
            seen.add(pair[1])
        pool.extend(deferred)
        out.append(batch)
    return out


def train(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(int(config["seed"]))
    torch.set_num_threads(max(1, int(config.get("threads") or os.cpu_count() or 1)))
    model = SentenceTransformer(str(config["base"]), device="cpu", local_files_only=True)
    if config.get("max_seq_length"):
        model.max_seq_length = int(config["max_seq_length"])
    loss = MultipleNegativesRankingLoss(model)
    steps = int(config["steps"])
    plan = batches(
        read_pairs(folder / "train.jsonl"), int(config["batch_size"]), steps, int(config["seed"])
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["learning_rate"]))
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    model.train()
    started = time.perf_counter()
    losses: list[float] = []
    for step, batch in enumerate(plan, start=1):
        if (folder / CANCEL_FILE).exists():
            raise TrainingCancelled(f"cancelled after {step - 1} of {steps} steps")
        questions = model.tokenize([q for q, _ in batch])
        passages = model.tokenize([p for _, p in batch])
        value = loss([questions, passages], torch.empty(0))
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(value.detach()))
        write_json(
            folder / PROGRESS_FILE,
            {
                "stage": "train",
                "step": step,
                "steps": steps,
                "loss": losses[-1],
                "seconds": time.perf_counter() - started,
            },
        )
    model.eval()
    share = float(config.get("base_share") or 0.0)
    if share > 0.0:
        blend_with_base(model, str(config["base"]), share)
    model.save(str(folder / MODEL_FOLDER))
    return {"train_seconds": time.perf_counter() - started, "losses": losses}


def blend_with_base(model: Any, base: str, share: float) -> None:
    """Move the tuned weights `share` of the way back to the base model's (WiSE-FT: Wortsman et
    al., 2022): most of the gain on the user's documents, less of the drift elsewhere."""
    import torch
    from sentence_transformers import SentenceTransformer

    original = SentenceTransformer(base, device="cpu", local_files_only=True).state_dict()
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.is_floating_point() and name in original:
                value.mul_(1.0 - share).add_(original[name], alpha=share)


def build_accelerated(folder: Path) -> str:
    """The tuned model's fast embedder, built and checked against torch like the bundled one."""
    from localllm.index.embed import Embedder

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    write_json(folder / PROGRESS_FILE, {"stage": "build", "step": 0, "steps": 0})
    embedder = Embedder(
        folder / MODEL_FOLDER,
        backend=str(config["backend"]),
        cache_dir=Path(config["cache_dir"]),
        threads=int(config.get("threads") or 0),
    )
    try:
        return embedder.backend_name
    finally:
        embedder.close()


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    try:
        result = train(folder)
        started = time.perf_counter()
        result["backend"] = build_accelerated(folder)
        result["build_seconds"] = time.perf_counter() - started
    except TrainingCancelled as e:
        write_json(folder / STATUS_FILE, {"state": "cancelled", "error": str(e)})
        return 1
    except Exception as e:
        traceback.print_exc()
        write_json(folder / STATUS_FILE, {"state": "failed", "error": f"{type(e).__name__}: {e}"})
        return 1
    write_json(folder / STATUS_FILE, {"state": "done", "error": None, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
