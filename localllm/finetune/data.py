"""Fine-tuning examples: read the JSONL formats people bring, check every line, split, and render.

Formats, one JSON object per line (other keys are ignored; a `"source"` object is kept as provenance):

    {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
    {"prompt": "...", "completion": "..."}
    {"instruction": "...", "input": "..." (optional), "output": "..."}
    {"text": "..."}

The first three become chat examples (a list of messages ending with the assistant's answer), rendered
for training through the model's own chat template, so the model learns the very layout it is prompted
with in the app. `{"text"}` examples are trained on as they are.

Pure Python: jinja2 and the GGUF reader are imported only when a template is built, and nothing here
imports torch or transformers, so the app starts without them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm.errors import DatasetError
from localllm.finetune.template import ChatTemplateFn, chatml
from localllm.llm.base import Message

if TYPE_CHECKING:
    from localllm.chat.conversations import ConversationStore


ROLES = ("system", "user", "assistant")
SHAPES = "messages | prompt+completion | instruction+output | text"
SUMMARY_PROBLEMS = 10  # problems spelled out in summary(); the rest are counted


@dataclass
class Example:
    """One training example: chat `messages` (ending with the assistant) or plain `text`."""

    messages: list[Message] | None = None
    text: str | None = None
    line: int | None = None  # 1-based line in the JSONL file it came from
    source: dict[str, Any] | None = None  # provenance: a liked answer's ids, the line's "source"

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.text is None):
            raise ValueError("an Example has either messages or text")

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def where(self) -> str:
        if self.line is not None:
            return f"line {self.line}"
        if self.source:
            return ", ".join(f"{k} {v}" for k, v in self.source.items())
        return "an example"

    def to_json(self) -> dict[str, Any]:
        """The normalised form: {"messages": [...]} or {"text": ...}, plus "source" if any."""
        data: dict[str, Any] = (
            {"messages": [dict(m) for m in self.messages]}
            if self.messages is not None
            else {"text": self.text}
        )
        if self.source is not None:
            data["source"] = self.source
        return data


@dataclass(frozen=True)
class LineProblem:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class LoadedDataset:
    examples: list[Example]
    problems: list[LineProblem] = field(default_factory=list)
    total_lines: int = 0  # non-blank lines read
    path: Path | None = None

    def summary(self) -> str:
        """'120 examples, 3 lines dropped: line 4: invalid JSON (...); line 9: ...'."""
        text = _count(len(self.examples), "example")
        if not self.problems:
            return text
        shown = "; ".join(str(p) for p in self.problems[:SUMMARY_PROBLEMS])
        more = len(self.problems) - SUMMARY_PROBLEMS
        if more > 0:
            shown += f"; and {more} more"
        return f"{text}, {_count(len(self.problems), 'line')} dropped: {shown}"


class InvalidExample(ValueError):
    """A line that can't be an example; the message is the reason."""


# ---------------------------------------------------------------------------------------- reading


def load_jsonl(path: str | Path) -> LoadedDataset:
    """Read and check every line; bad lines are reported with their reason, the rest kept.

    Raises DatasetError when the file is missing, a folder, not UTF-8, empty, or has no usable line.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist")
    if path.is_dir():
        raise DatasetError(f"dataset {path} is a folder; pick a .jsonl file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"dataset {path} can't be read: {e.strerror or e}") from e
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DatasetError(
            f"dataset {path} is not UTF-8 text (line {line}, byte {e.start}); "
            "save it as UTF-8 JSONL, one JSON object per line"
        ) from e

    dataset = LoadedDataset(examples=[], path=path)
    # split on newlines only: str.splitlines() would also cut at U+2028, legal inside JSON strings
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        dataset.total_lines += 1
        try:
            dataset.examples.append(parse_line(line, number))
        except InvalidExample as bad:
            dataset.problems.append(LineProblem(number, str(bad)))

    if dataset.total_lines == 0:
        raise DatasetError(f"dataset {path} is empty: expected one JSON object per line ({SHAPES})")
    if not dataset.examples:
        raise DatasetError(f"dataset {path} has no usable line: {dataset.summary()}")
    return dataset


def parse_line(line: str, number: int | None = None) -> Example:
    """One JSONL line as an Example; raises InvalidExample with the reason it can't be one."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise InvalidExample(f"invalid JSON ({e.msg} at column {e.colno})") from e
    except RecursionError as e:
        raise InvalidExample("invalid JSON (nested too deeply)") from e
    if not isinstance(data, dict):
        raise InvalidExample(f"not a JSON object but {_json_type(data)}")
    return parse_object(data, number)


def parse_object(data: dict[str, Any], number: int | None = None) -> Example:
    source = data.get("source")
    if source is not None and not isinstance(source, dict):
        raise InvalidExample(f"'source' must be an object, not {_json_type(source)}")

    if "messages" in data:
        messages = _messages(data["messages"])
    elif "prompt" in data or "completion" in data:
        prompt = _string(data, "prompt")
        completion = _string(data, "completion")
        messages = [_msg("user", prompt), _msg("assistant", completion)]
    elif "instruction" in data or "output" in data:
        instruction = _string(data, "instruction")
        output = _string(data, "output")
        extra = data.get("input")
        if extra is not None and not isinstance(extra, str):
            raise InvalidExample(f"'input' must be a string, not {_json_type(extra)}")
        question = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        messages = [_msg("user", question), _msg("assistant", output)]
    elif "text" in data:
        return Example(text=_string(data, "text"), line=number, source=source)
    else:
        names = sorted(data)
        keys = ", ".join(names[:8]) + (f", ... ({len(names)} keys)" if len(names) > 8 else "")
        raise InvalidExample(f"unknown shape (keys: {keys or 'none'}): expected one of {SHAPES}")
    return Example(messages=messages, line=number, source=source)


def _string(data: dict[str, Any], key: str) -> str:
    if key not in data:
        present = " and ".join(f"'{k}'" for k in sorted(data) if k in _PARTNERS.get(key, ()))
        raise InvalidExample(f"'{key}' is missing" + (f" ({present} given)" if present else ""))
    value = data[key]
    if not isinstance(value, str):
        raise InvalidExample(f"'{key}' must be a string, not {_json_type(value)}")
    if not value.strip():
        raise InvalidExample(f"'{key}' is empty")
    return value


_PARTNERS = {
    "prompt": ("completion",),
    "completion": ("prompt",),
    "instruction": ("output", "input"),
    "output": ("instruction", "input"),
}


def _messages(value: Any) -> list[Message]:
    if not isinstance(value, list):
        raise InvalidExample(f"'messages' must be a list, not {_json_type(value)}")
    if not value:
        raise InvalidExample("'messages' is empty")
    messages: list[Message] = []
    for n, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise InvalidExample(f"message {n} must be an object, not {_json_type(item)}")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            shown = repr(role) if isinstance(role, str) else _json_type(role)
            raise InvalidExample(
                f"message {n} has role {shown}: expected system, user or assistant"
            )
        if not isinstance(content, str):
            raise InvalidExample(
                f"message {n} ({role}): 'content' must be a string, not {_json_type(content)}"
            )
        if not content.strip():
            raise InvalidExample(f"message {n} ({role}) has empty content")
        if role == "system" and n > 1:
            raise InvalidExample(
                f"message {n} is a system message: only the first message may be one"
            )
        messages.append(_msg(role, content))
    if not any(m["role"] == "user" for m in messages):
        raise InvalidExample(
            "no user message: a chat example needs a user turn and an assistant answer"
        )
    if messages[-1]["role"] != "assistant":
        raise InvalidExample(
            f"ends with a {messages[-1]['role']} message: "
            "a chat example must end with the assistant's answer"
        )
    return messages


def _msg(role: str, content: str) -> Message:
    return {"role": role, "content": content}  # type: ignore[typeddict-item]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# ---------------------------------------------------------------------------------------- split


def split(
    examples: Sequence[Example], validation_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, validation), each in the original order.

    Deterministic and stable across runs and Python versions: examples are ranked by a hash of the
    seed and their content, and the lowest-ranked go to validation, so an example mostly stays on its
    side when lines are added. At least one validation example when there are two or more (and the
    fraction is above 0); at least one training example always.
    """
    if not 0 <= validation_fraction < 1:
        raise DatasetError(
            f"the validation fraction is between 0 and 1 (e.g. 0.1), not {validation_fraction}"
        )
    n = len(examples)
    if n < 2 or validation_fraction == 0:
        return list(examples), []
    wanted = min(n - 1, max(1, round(n * validation_fraction)))

    def rank(i: int) -> tuple[str, int]:
        body = examples[i].to_json()
        body.pop("source", None)
        key = f"{seed}\n{json.dumps(body, sort_keys=True, ensure_ascii=False)}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest(), i

    validation = set(sorted(range(n), key=rank)[:wanted])
    train = [e for i, e in enumerate(examples) if i not in validation]
    return train, [e for i, e in enumerate(examples) if i in validation]


def render(example: Example, template: ChatTemplateFn | None = None) -> str:
    """The training text: chat examples through `template` (None: `chatml`), plain text as is."""
    if example.messages is None:
        return example.text or ""
    try:
        return (template or chatml)(example.messages)
    except DatasetError as e:
        raise DatasetError(f"{example.where()}: {e}") from e


# ---------------------------------------------------------------------------------------- sources


def liked_answers(conversations: ConversationStore) -> list[Example]:
    """Chat examples from the answers the user liked: their question, then the answer."""
    examples = []
    for liked in conversations.feedback(1):
        if not liked.question.strip() or not liked.answer.strip():
            continue
        examples.append(
            Example(
                messages=[_msg("user", liked.question), _msg("assistant", liked.answer)],
                source={"conversation": liked.conversation_id, "message": liked.message_id},
            )
        )
    return examples


def write_jsonl(examples: Sequence[Example], path: str | Path) -> Path:
    """Write the normalised form, one example per line; all or nothing (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for example in examples:
                fh.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
