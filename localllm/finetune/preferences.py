"""Preference pairs for DPO: (prompt, chosen, rejected) from the user's feedback on saved chats.

The pairing rule, kept simple:
- every disliked answer is paired with the liked answer whose question is the same (compared
  case- and space-blind) or, failing that, the most similar one: the embedder's cosine similarity
  of the two questions at least SIMILAR. The prompt is the disliked answer's own question.
- an answer the user regenerated and kept (the new one not disliked, the old one not liked) is
  preferred over the one it replaced, for the question both answered.
A pair whose two answers are the same text is dropped, and so is a repeat of a pair already made.

File format (JSONL, one pair a line; other keys ignored, "source" kept as provenance):

    {"prompt": "question", "chosen": "better answer", "rejected": "worse answer"}

Pure Python and numpy: the embedder is handed in (saved_pairs_file opens the app's own), and
nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from localllm.errors import DatasetError
from localllm.finetune.data import Example, LineProblem, LoadedDataset, load_jsonl

if TYPE_CHECKING:
    from localllm.chat.conversations import ConversationStore, FeedbackExample, Regeneration
    from localllm.config import Settings

# The cosine of two questions (all-MiniLM-L6-v2) from which they count as one: paraphrases measured
# 0.83-0.96, other questions on the same topic 0.60-0.69 (install vs remove a package, the capital of
# France vs of Germany), a few loose paraphrases 0.71 (left unpaired: a wrong pair teaches harm).
SIMILAR = 0.8
MIN_PAIRS = 4  # fewer pairs than this and the Fine-tune tab does not offer DPO
KEYS = ("prompt", "chosen", "rejected")
PAIRS_FILE = "pairs.jsonl"  # a DPO run's pairs, in its run folder

Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> unit vectors (Embedder.embed)


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
        }
        if self.source:
            data["source"] = self.source
        return data

    def chosen_example(self) -> Example:
        """The question and the preferred answer, as a chat example (token counts, held-out
        prompts answered before and after)."""
        return Example(
            messages=[
                {"role": "user", "content": self.prompt},
                {"role": "assistant", "content": self.chosen},
            ],
            source=self.source or None,
        )


@dataclass
class LoadedPairs:
    pairs: list[PreferencePair]
    problems: list[LineProblem] = field(default_factory=list)
    path: Path | None = None

    def as_dataset(self) -> LoadedDataset:
        """The chosen answers as a dataset, for the checks and the estimate that runs share."""
        return LoadedDataset(
            examples=[p.chosen_example() for p in self.pairs],
            problems=list(self.problems),
            total_lines=len(self.pairs) + len(self.problems),
            path=self.path,
        )


def same_question(a: str, b: str) -> bool:
    return _normal(a) == _normal(b)


def pair_ratings(
    liked: Sequence[FeedbackExample],
    disliked: Sequence[FeedbackExample],
    embed: Embed | None = None,
    threshold: float = SIMILAR,
) -> list[PreferencePair]:
    """Each disliked answer with the liked answer to the same or the most similar question (ties:
    the one rated last). Without `embed` only the same question pairs."""
    liked = [e for e in liked if e.question.strip() and e.answer.strip()]
    disliked = [e for e in disliked if e.question.strip() and e.answer.strip()]
    if not liked or not disliked:
        return []
    scores = np.zeros((len(disliked), len(liked)), dtype=np.float32)
    if embed is not None:
        vectors = np.asarray(embed([e.question for e in disliked] + [e.question for e in liked]))
        scores = vectors[: len(disliked)] @ vectors[len(disliked) :].T
    pairs = []
    for i, bad in enumerate(disliked):
        row = [
            1.0 if same_question(bad.question, good.question) else float(scores[i, j])
            for j, good in enumerate(liked)
        ]
        best = max(range(len(liked)), key=lambda j: (row[j], liked[j].created or 0, j))
        if row[best] < threshold:
            continue
        good = liked[best]
        pairs.append(
            PreferencePair(
                prompt=bad.question,
                chosen=good.answer,
                rejected=bad.answer,
                source={
                    "conversation": bad.conversation_id,
                    "chosen": good.message_id,
                    "rejected": bad.message_id,
                    "similarity": round(row[best], 3),
                },
            )
        )
    return pairs


def pair_regenerations(regenerations: Iterable[Regeneration]) -> list[PreferencePair]:
    """A regenerated answer the user kept and did not dislike, over the answer it replaced (unless
    that one was liked: then there is no preference to learn)."""
    pairs = []
    for r in regenerations:
        if not r.kept or r.rating == -1 or r.replaced_rating == 1:
            continue
        if not (r.question.strip() and r.replaced.strip() and r.replacement.strip()):
            continue
        source = {"conversation": r.conversation_id, "chosen": r.replacement_id}
        source.update(rejected=r.replaced_id, regenerated=True)
        pairs.append(PreferencePair(r.question, r.replacement, r.replaced, source))
    return pairs


def unique(pairs: Iterable[PreferencePair]) -> list[PreferencePair]:
    """Without repeats (the same question and answers) and without pairs of one answer twice."""
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for p in pairs:
        key = (_normal(p.prompt), _normal(p.chosen), _normal(p.rejected))
        if key[1] == key[2] or key in seen:
            continue
        seen.add(key)
        kept.append(p)
    return kept


def feedback_pairs(
    conversations: ConversationStore, embed: Embed | None, threshold: float = SIMILAR
) -> list[PreferencePair]:
    """Every preference pair the saved conversations give: regenerations first, then ratings."""
    kept = pair_regenerations(conversations.regenerations())
    rated = pair_ratings(conversations.feedback(1), conversations.feedback(-1), embed, threshold)
    return unique([*kept, *rated])


def describe(count: int) -> str:
    """'12 preference pairs from your thumbs and regenerations' and, below MIN_PAIRS, what to do."""
    text = f"{count} preference pair{'' if count == 1 else 's'} from your thumbs and regenerations"
    if count < MIN_PAIRS:
        text += (
            f"; DPO needs at least {MIN_PAIRS}: give a thumbs down and a thumbs up to answers to "
            "the same question, or regenerate an answer you didn't like"
        )
    return text


def saved_pairs_file(settings: Settings, out: Path | None = None) -> tuple[Path, int]:
    """The pairs of the saved conversations written to `out` (default runs/datasets/), with their
    count; DatasetError when there are fewer than MIN_PAIRS."""
    from localllm.chat.conversations import ConversationStore
    from localllm.index.embed import Embedder

    embedder = Embedder(
        settings.embedder_path,
        backend=settings.embed_backend,
        cache_dir=settings.cache_dir / "embedder",
    )
    with ConversationStore(settings.conversations_path) as conversations:
        try:
            pairs = feedback_pairs(conversations, embedder.embed)
        finally:
            embedder.close()
    if len(pairs) < MIN_PAIRS:
        raise DatasetError(describe(len(pairs)))
    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = Path(settings.runs_dir) / "datasets" / f"preferences-{stamp}.jsonl"
    return write_pairs(pairs, out), len(pairs)


def write_pairs(pairs: Sequence[PreferencePair], path: str | Path) -> Path:
    """One pair a line; all or nothing (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for pair in pairs:
                fh.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_pairs(path: str | Path) -> LoadedPairs:
    """Every line checked; bad ones reported with the reason, DatasetError when none is usable."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise DatasetError(f"preference pairs {path} do not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"preference pairs {path} can't be read as UTF-8 text: {e}") from e
    loaded = LoadedPairs(pairs=[], path=path)
    for number, line in enumerate(content.split("\n"), start=1):
        if line.strip():
            try:
                loaded.pairs.append(_pair(line))
            except ValueError as e:
                loaded.problems.append(LineProblem(number, str(e)))
    if not loaded.pairs:
        shown = "; ".join(str(p) for p in loaded.problems[:3]) or "the file is empty"
        raise DatasetError(
            f"{path.name} has no usable preference pair ({shown}): expected one JSON object "
            'a line, {"prompt": ..., "chosen": ..., "rejected": ...}'
        )
    return loaded


def is_pairs_file(path: str | Path) -> bool:
    """Whether the first line with a JSON object in it is a preference pair's."""
    try:
        with Path(path).open(encoding="utf-8-sig") as fh:
            for line in fh:
                if line.strip():
                    data = json.loads(line)
                    return isinstance(data, dict) and {"chosen", "rejected"} <= set(data)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return False


def load_examples(path: str | Path) -> LoadedDataset:
    """Any dataset file as examples: preference pairs as their chosen answers (the preview, the
    estimate), the other shapes through data.load_jsonl."""
    return load_pairs(path).as_dataset() if is_pairs_file(path) else load_jsonl(path)


def _pair(line: str) -> PreferencePair:
    try:
        data = json.loads(line)
    except ValueError as e:
        raise ValueError(f"invalid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    values = []
    for key in KEYS:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"'{key}' must be a non-empty string")
        values.append(value)
    if _normal(values[1]) == _normal(values[2]):
        raise ValueError("'chosen' and 'rejected' are the same answer")
    source = data.get("source")
    return PreferencePair(*values, source=source if isinstance(source, dict) else {})


def _normal(text: str) -> str:
    return " ".join(text.casefold().split())
