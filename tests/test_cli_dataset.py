"""`localllm dataset liked|docs`: training files from chat feedback and from indexed documents."""

from __future__ import annotations

import json
from pathlib import Path

from localllm.chat.conversations import ConversationStore
from localllm.finetune.data import load_jsonl
from tests.conftest import cli_env, run_cli

NOTES = """# Landmarks

The Eiffel Tower is in Paris, France. It was built in 1889 for the World's Fair. The tower is 330
metres tall and made of wrought iron. Gustave Eiffel's company designed and built the tower. Millions
of people visit the Eiffel Tower every year, and it is the most visited paid monument in the world.
"""


def test_liked_answers_become_a_dataset(tmp_path: Path):
    db = tmp_path / "conversations.sqlite3"
    with ConversationStore(db) as store:
        chat = store.create()
        store.add_message(chat, "user", "Where is the spare key?")
        store.rate(store.add_message(chat, "assistant", "Under the blue flowerpot."), 1)
    env = cli_env(LOCALLLM_CONVERSATIONS_PATH=str(db))
    out = tmp_path / "liked.jsonl"
    done = run_cli("dataset", "liked", "--out", str(out), "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["examples"] == 1
    [example] = load_jsonl(out).examples
    assert example.messages is not None
    assert [m["content"] for m in example.messages] == [
        "Where is the spare key?",
        "Under the blue flowerpot.",
    ]

    empty = run_cli(
        "dataset", "liked", "--out", str(tmp_path / "none.jsonl"),
        env=cli_env(LOCALLLM_CONVERSATIONS_PATH=str(tmp_path / "fresh.sqlite3")),
    )  # fmt: skip
    assert empty.returncode == 1 and "no liked answers" in empty.stderr
    assert not (tmp_path / "none.jsonl").exists()


def test_documents_become_question_answer_pairs_with_their_source(tmp_path: Path):
    notes = tmp_path / "landmarks.md"
    notes.write_text(NOTES, encoding="utf-8")
    env = cli_env(
        LOCALLLM_DOCS_STORE=str(tmp_path / "docs_store"),
        LOCALLLM_MODELS_DIR=str(tmp_path / "models"),
    )
    assert run_cli("ingest", str(notes), "--collection", "places", env=env).returncode == 0

    missing = run_cli("dataset", "docs", "--collection", "nope", "--out", "x.jsonl", env=env)
    assert missing.returncode == 1 and "nope" in missing.stderr

    out = tmp_path / "pairs.jsonl"
    done = run_cli(
        "dataset", "docs", "--collection", "places", "--max-pairs", "1", "--out", str(out),
        "--json", env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["examples"] == 1
    [example] = load_jsonl(out).examples
    assert example.messages is not None and len(example.messages) == 2
    assert example.source is not None and example.source["file"] == "landmarks.md"
