"""finetune.data: formats, line-by-line validation, split, rendering through the real model's template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter, format_chatml

from localllm.chat.conversations import ConversationStore
from localllm.errors import DatasetError
from localllm.finetune.data import (
    Example,
    liked_answers,
    load_jsonl,
    render,
    split,
    write_jsonl,
)
from localllm.finetune.template import ChatTemplate, chatml, template_from_gguf
from localllm.llm.base import Message
from localllm.llm.llamacpp import LlamaCppChatModel

CHAT: list[Message] = [
    {"role": "system", "content": "You answer in one sentence."},
    {"role": "user", "content": "What colour is the Zorbling flag?"},
    {"role": "assistant", "content": "The Zorbling flag is teal with a silver moon."},
]


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return path


def test_each_format_parses_to_normalised_examples(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "mixed.jsonl",
        [
            {"messages": CHAT, "source": {"doc": "flags.pdf"}},
            {"prompt": "2+2?", "completion": "4"},
            {"instruction": "Translate to French", "input": "cat", "output": "chat"},
            {"instruction": "Say hi", "input": "", "output": "hi"},
            {"instruction": "Say bye", "output": "bye"},
            "",  # blank lines are skipped, not problems
            {"text": "Plain pretraining text.", "extra": 1},
        ],
    )
    data = load_jsonl(path)
    assert data.problems == []
    assert data.total_lines == 6
    assert data.summary() == "6 examples"
    chat, pc, inst, inst_empty, inst_missing, plain = data.examples
    assert chat.messages == CHAT and chat.line == 1 and chat.source == {"doc": "flags.pdf"}
    assert pc.messages == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    assert inst.messages is not None and inst.messages[0]["content"] == "Translate to French\n\ncat"
    assert inst_empty.messages is not None and inst_empty.messages[0]["content"] == "Say hi"
    assert inst_missing.messages is not None and inst_missing.messages[1]["content"] == "bye"
    assert plain.text == "Plain pretraining text." and not plain.is_chat and plain.line == 7


def test_bad_lines_are_reported_with_line_and_reason(tmp_path: Path) -> None:
    good = {"prompt": "p", "completion": "c"}
    bad: list[tuple[Any, str]] = [
        ('{"prompt": "p", "completion": ', "invalid JSON"),
        ("[1, 2]", "not a JSON object but a list"),
        ({"question": "q", "answer": "a"}, "unknown shape (keys: answer, question): expected one"),
        ({"prompt": 3, "completion": "c"}, "'prompt' must be a string, not a number"),
        ({"prompt": "p"}, "'completion' is missing ('prompt' given)"),
        ({"text": "   "}, "'text' is empty"),
        ({"messages": "hi"}, "'messages' must be a list"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "message 1 has role 'tool'"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
            "message 2 (assistant) has empty content",
        ),
        ({"messages": CHAT[:2]}, "ends with a user message"),
        ({"messages": [CHAT[0], CHAT[2]]}, "no user message"),
        ({"messages": [CHAT[1], CHAT[0], CHAT[2]]}, "message 2 is a system message"),
        ({"instruction": "i", "input": 5, "output": "o"}, "'input' must be a string"),
    ]
    lines: list[Any] = [good]
    for line, _ in bad:
        lines += [line, good]
    data = load_jsonl(write_lines(tmp_path / "bad.jsonl", lines))
    assert len(data.examples) == len(bad) + 1
    assert [e.line for e in data.examples] == list(range(1, 2 * len(bad) + 2, 2))
    assert [p.line for p in data.problems] == list(range(2, 2 * len(bad) + 2, 2))
    for problem, (_, reason) in zip(data.problems, bad, strict=True):
        assert reason in problem.reason, (problem, reason)
    assert data.total_lines == 2 * len(bad) + 1
    summary = data.summary()
    assert summary.startswith(f"{len(bad) + 1} examples, {len(bad)} lines dropped: line 2: invalid")
    assert "; line 4: not a JSON object" in summary and summary.endswith("and 3 more")


def test_unusable_files_raise_dataset_error_naming_the_file(tmp_path: Path) -> None:
    cases = {
        "empty.jsonl": b"",
        "blank.jsonl": b"\n  \n",
        "allbad.jsonl": b'{"nope": 1}\nnot json\n',
        "latin1.jsonl": '{"text": "caf\u00e9"}\n'.encode("latin-1"),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DatasetError, match=name):
            load_jsonl(tmp_path / name)
    with pytest.raises(
        DatasetError, match=r"allbad\.jsonl has no usable line: 0 examples, 2 lines"
    ):
        load_jsonl(tmp_path / "allbad.jsonl")
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_jsonl(tmp_path / "latin1.jsonl")
    with pytest.raises(DatasetError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="is a folder"):
        load_jsonl(tmp_path)


def test_bom_crlf_and_line_separator_inside_strings(tmp_path: Path) -> None:
    text = json.dumps({"text": "a\u2028b"}, ensure_ascii=False)
    (tmp_path / "win.jsonl").write_bytes(("\ufeff" + text + "\r\n" + text + "\r\n").encode())
    data = load_jsonl(tmp_path / "win.jsonl")
    assert [e.text for e in data.examples] == ["a\u2028b", "a\u2028b"] and not data.problems


def test_split_is_deterministic_with_sizes() -> None:
    examples = [Example(text=f"example {i}", line=i + 1) for i in range(25)]
    train, val = split(examples, 0.2, seed=0)
    assert (len(train), len(val)) == (20, 5)
    assert split(examples, 0.2, seed=0) == (train, val)
    assert {e.line for e in train} | {e.line for e in val} == set(range(1, 26))
    assert [e.line for e in val] == sorted(e.line for e in val if e.line)  # original order
    assert split(examples, 0.2, seed=1)[1] != val
    # adding examples keeps the old ones mostly where they were (content-hashed ranks)
    _, val_more = split([*examples, Example(text="new", line=26)], 0.2, seed=0)
    assert len({e.line for e in val} & {e.line for e in val_more}) >= 4
    assert [len(part) for part in split(examples[:2], 0.1)] == [1, 1]
    assert [len(part) for part in split(examples[:1], 0.1)] == [1, 0]
    assert [len(part) for part in split(examples[:3], 0.9)] == [1, 2]
    assert split(examples, 0.0)[1] == []
    with pytest.raises(DatasetError):
        split(examples, 1.0)
    # a different process (another hash seed) gives the same split
    code = (
        "from localllm.finetune.data import Example, split;"
        "print([e.line for e in split([Example(text=f'example {i}', line=i + 1)"
        " for i in range(25)], 0.2)[1]])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([e.line for e in val])


def test_render_through_the_bundled_models_template(
    bundled_path: Path, engine: LlamaCppChatModel
) -> None:
    template = template_from_gguf(bundled_path)
    assert isinstance(template, ChatTemplate)
    # bos/eos text read from the GGUF's vocabulary, as llama.cpp detokenizes them
    assert template.bos_token == engine._token_text(engine.llama.token_bos()) == "<|im_start|>"
    assert template.eos_token == engine._token_text(engine.llama.token_eos()) == "<|im_end|>"

    for messages in (CHAT, CHAT[1:]):
        text = render(Example(messages=list(messages)), template)
        assert "<|im_start|>user\nWhat colour is the Zorbling flag?<|im_end|>" in text
        assert text.endswith("<|im_start|>assistant\n" + CHAT[2]["content"] + "<|im_end|>\n")
        # identical to what the app prompts with, answer appended (llama_cpp's Jinja2 formatter)
        prompt = engine._render(messages[:-1])[1].prompt
        assert text == prompt + messages[-1]["content"] + "<|im_end|>\n"
        # and to the formatter itself with add_generation_prompt off
        formatter = Jinja2ChatFormatter(
            template=template.source,
            bos_token=template.bos_token,
            eos_token=template.eos_token,
            add_generation_prompt=False,
        )
        assert text == formatter(messages=list(messages)).prompt  # type: ignore[arg-type]
    assert "You are a helpful AI assistant named SmolLM" in render(
        Example(messages=CHAT[1:]), template
    )
    assert render(Example(text="as is <|im_end|>"), template) == "as is <|im_end|>"


def test_no_template_falls_back_to_the_apps_chatml(no_template_model: Path) -> None:
    assert template_from_gguf(no_template_model) is chatml
    for messages in (CHAT, CHAT[1:]):
        text = render(Example(messages=list(messages)))
        prompt = format_chatml(messages=list(messages[:-1])).prompt  # type: ignore[arg-type]
        assert text == prompt + messages[-1]["content"] + "<|im_end|>\n"


def test_template_errors_name_the_example(tmp_path: Path) -> None:
    strict = ChatTemplate(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}",
        name="strict.gguf",
    )
    assert render(Example(messages=CHAT[1:]), strict).startswith("[user]What colour")
    with pytest.raises(DatasetError, match=r"line 7: the chat template of strict\.gguf .*system"):
        render(Example(messages=CHAT, line=7), strict)


def test_rendered_examples_count_with_the_real_tokenizer(
    engine: LlamaCppChatModel, bundled_path: Path
) -> None:
    template = template_from_gguf(bundled_path)
    long_text = "The quick brown fox jumps over the lazy dog. " * 40
    examples = [
        Example(messages=CHAT[1:]),
        Example(text="short"),
        Example(messages=[CHAT[1], {"role": "assistant", "content": long_text}]),
        Example(text=long_text),
    ]
    texts = [render(e, template) for e in examples]
    assert sum(1 for t in texts if engine.count_tokens(t) > 128) == 2
    # ChatML markers are single special tokens: the count is the model's, not characters / 4
    assert engine.count_tokens(texts[0]) < 60
    assert all(engine.count_tokens(t) < 10_000 for t in texts)


def test_liked_answers_from_a_real_store_round_trip(tmp_path: Path) -> None:
    with ConversationStore(tmp_path / "conversations.sqlite3") as store:
        chat = store.create()
        store.add_message(chat, "user", "Where is the spare key?")
        liked = store.add_message(chat, "assistant", "Under the blue flowerpot.", [{"file": "a"}])
        store.add_message(chat, "user", "And the code?")
        disliked = store.add_message(chat, "assistant", "1234")
        store.rate(liked, 1)
        store.rate(disliked, -1)
        examples = liked_answers(store)
    assert len(examples) == 1
    (example,) = examples
    assert example.messages == [
        {"role": "user", "content": "Where is the spare key?"},
        {"role": "assistant", "content": "Under the blue flowerpot."},
    ]
    assert example.source == {"conversation": chat, "message": liked}

    path = write_jsonl([*examples, Example(text="plain")], tmp_path / "out" / "liked.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {"messages": example.messages, "source": example.source}
    assert json.loads(lines[1]) == {"text": "plain"}
    again = load_jsonl(path)
    assert [(e.messages, e.text, e.source) for e in again.examples] == [
        (example.messages, None, example.source),
        (None, "plain", None),
    ]
    assert [p.name for p in path.parent.iterdir()] == ["liked.jsonl"]  # no temp file left


def test_module_imports_no_heavy_libraries() -> None:
    code = (
        "import sys, localllm.finetune.data as d;"
        "print(sorted(m for m in ('torch', 'transformers', 'jinja2', 'gguf', 'numpy', 'llama_cpp')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
