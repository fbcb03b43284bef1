"""The saved conversations' SQLite file: its tables, opening it, and bringing an older file up to date."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from localllm.errors import LocalLLMError

# Raised only by a change older versions can't live with; a column added with a default is not one.
SCHEMA_VERSION = 1

# `touched` orders conversations by their last change; clock readings can tie, a counter can't.
# `superseded_by`: the message that replaced this one (a regenerated answer, an edited question);
# a superseded message is kept, hidden from the conversation.
SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    collection TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    touched INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_touch ON conversations (touched);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    sources TEXT NOT NULL DEFAULT '[]',
    details TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    rating INTEGER CHECK (rating IN (1, -1)),
    rated REAL,
    superseded_by INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
"""

# Columns added since the first release, each with what an older file's rows get.
ADDED_COLUMNS = {
    "details": "TEXT NOT NULL DEFAULT '{}'",  # a grounded answer's check
    "superseded_by": "INTEGER",  # regenerate and edit
}


class ConversationError(LocalLLMError):
    """A saved conversation or message that can't be found or changed; fit to show a user."""


def connect(path: Path) -> sqlite3.Connection:
    """The file at `path`, opened (created if missing) and up to date."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False)
    except (OSError, sqlite3.Error) as e:
        raise ConversationError(f"can't open the saved conversations at {path}: {e}") from e
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 5000")
        db.create_function("folded", 1, _folded, deterministic=True)
        _create_schema(db, path)
    except sqlite3.Error as e:
        db.close()
        raise ConversationError(
            f"{path} can't be read as saved conversations ({e}); move it away to start afresh"
        ) from e
    except ConversationError:
        db.close()
        raise
    return db


def _folded(text: str | None) -> str:
    """Text compared without case, for any script (SQLite's own LIKE folds ASCII only)."""
    return (text or "").casefold()


def _create_schema(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ConversationError(
            f"{path} was written by a newer version of LocalLLM; update LocalLLM to open it"
        )
    with db:
        db.executescript(SCHEMA)
        columns = {row["name"] for row in db.execute("PRAGMA table_info(messages)")}
        for name, definition in ADDED_COLUMNS.items():
            if name not in columns:  # a file from before this column
                db.execute(f"ALTER TABLE messages ADD COLUMN {name} {definition}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
