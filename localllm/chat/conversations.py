"""Saved chat conversations and the ratings of their answers, in one SQLite file.

Liked answers, each with the question before it, are what fine-tuning can learn from.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from localllm.errors import LocalLLMError

ROLES = ("user", "assistant")
RATINGS = (1, -1)  # liked, disliked
TITLE_LENGTH = 60
# Raised only by a change older versions can't live with; a column added with a default is not one.
SCHEMA_VERSION = 1

# `touched` orders conversations by their last change; clock readings can tie, a counter can't.
_SCHEMA = """
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
    rated REAL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
"""


class ConversationError(LocalLLMError):
    """A saved conversation or message that can't be found or changed; fit to show a user."""


@dataclass
class ConversationSummary:
    id: str
    title: str
    collection: str | None
    created: float
    updated: float
    messages: int


@dataclass
class StoredMessage:
    id: int
    role: str  # "user" | "assistant"
    content: str
    sources: list[dict[str, Any]]
    created: float
    rating: int | None  # 1 liked, -1 disliked
    # a grounded answer's check: outcome, model_answer, attribution (GroundedAnswer.to_dict's);
    # empty for a plain answer, and for one saved before answers kept it
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class FeedbackExample:
    """A rated answer and the user's question just before it."""

    conversation_id: str
    message_id: int
    question: str
    answer: str
    sources: list[dict[str, Any]]
    rating: int
    created: float  # when the answer was rated


class ConversationStore:
    """Conversations in the SQLite file at `path`; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = _connect(self.path)

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def create(self, title: str = "", collection: str | None = None) -> str:
        """A new, empty conversation; returns its id."""
        conversation_id = uuid.uuid4().hex
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO conversations (id, title, collection, created, updated, touched)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (conversation_id, title.strip(), collection, now, now, _next_touch(db)),
            )
        return conversation_id

    def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        sources: Sequence[dict[str, Any]] = (),
        details: dict[str, Any] | None = None,
    ) -> int:
        """Append a message; the first user message names an untitled conversation."""
        if role not in ROLES:
            raise ConversationError(f"a message's role is 'user' or 'assistant', not {role!r}")
        now = time.time()
        with self._transaction() as db:
            title = _summary_row(db, conversation_id)["title"]
            cursor = db.execute(
                "INSERT INTO messages (conversation_id, role, content, sources, details, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    role,
                    content,
                    json.dumps(list(sources)),
                    json.dumps(details or {}),
                    now,
                ),
            )
            if not title and role == "user":
                title = title_from(content)
            _touch(db, conversation_id, now, title=title)
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def set_collection(self, conversation_id: str, collection: str | None) -> None:
        self._update(conversation_id, "collection", collection)

    def rename(self, conversation_id: str, title: str) -> None:
        self._update(conversation_id, "title", title.strip())

    def conversations(self) -> list[ConversationSummary]:
        """Every conversation, the most recently changed first."""
        with self._transaction() as db:
            rows = db.execute(f"{_SUMMARY} GROUP BY c.id ORDER BY c.touched DESC").fetchall()
        return [_summary(row) for row in rows]

    def get(self, conversation_id: str) -> ConversationSummary:
        with self._transaction() as db:
            return _summary(_summary_row(db, conversation_id))

    def messages(self, conversation_id: str) -> list[StoredMessage]:
        """The conversation's messages in the order they were added."""
        with self._transaction() as db:
            _summary_row(db, conversation_id)
            rows = db.execute(
                f"{_MESSAGE} WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
        return [_message(row) for row in rows]

    def message(self, message_id: int) -> StoredMessage:
        with self._transaction() as db:
            row = db.execute(f"{_MESSAGE} WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise ConversationError(f"no message with id {message_id}; it may have been deleted")
        return _message(row)

    def delete(self, conversation_id: str) -> None:
        """Delete the conversation with its messages and their ratings."""
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            if deleted.rowcount == 0:
                raise _no_conversation(conversation_id)

    def rate(self, message_id: int, rating: int) -> None:
        """Rate an answer: 1 liked, -1 disliked, 0 clears its rating."""
        if rating not in (*RATINGS, 0):
            raise ConversationError(
                f"a rating is 1 (liked), -1 (disliked) or 0 (no rating), not {rating!r}"
            )
        with self._transaction() as db:
            row = db.execute("SELECT role FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise ConversationError(f"no message with id {message_id}")
            if row["role"] != "assistant":
                raise ConversationError(
                    f"only answers can be rated; message {message_id} is the user's own message"
                )
            db.execute(
                "UPDATE messages SET rating = ?, rated = ? WHERE id = ?",
                (rating or None, time.time() if rating else None, message_id),
            )

    def feedback(self, rating: int | None = 1) -> list[FeedbackExample]:
        """Rated answers with the user's question before each, oldest answer first.

        `rating` 1 gives the liked ones, -1 the disliked ones, None every rated answer.
        """
        if rating is not None and rating not in RATINGS:
            raise ConversationError(
                f"feedback is liked (1), disliked (-1) or all (None), not {rating!r}"
            )
        wanted = RATINGS if rating is None else (rating, rating)
        with self._transaction() as db:
            rows = db.execute(_FEEDBACK, wanted).fetchall()
        return [_example(row) for row in rows]

    def _update(self, conversation_id: str, column: str, value: str | None) -> None:
        with self._transaction() as db:
            _summary_row(db, conversation_id)
            db.execute(
                f"UPDATE conversations SET {column} = ? WHERE id = ?", (value, conversation_id)
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection, held by this thread alone, committed on success, rolled back on error."""
        with self._lock:
            if self._db is None:
                raise ConversationError(f"the conversation store at {self.path} has been closed")
            try:
                with self._db:
                    yield self._db
            except sqlite3.OperationalError as e:
                if "locked" in str(e) or "busy" in str(e):
                    raise ConversationError(
                        f"the saved conversations at {self.path} are locked by another program "
                        "(a second LocalLLM on the same data folder?); nothing was changed: "
                        "try again when it is done"
                    ) from e
                raise ConversationError(f"the saved conversations at {self.path}: {e}") from e


_MESSAGE = "SELECT id, role, content, sources, details, created, rating FROM messages"
_SUMMARY = (
    "SELECT c.id, c.title, c.collection, c.created, c.updated, COUNT(m.id) AS messages"
    " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id"
)

# Both placeholders are ratings to include; the question is the last user message before the answer.
_FEEDBACK = """
SELECT a.conversation_id, a.id, q.content AS question, a.content AS answer, a.sources, a.rating,
       a.rated
FROM messages a
JOIN messages q ON q.id = (
    SELECT MAX(id) FROM messages
    WHERE conversation_id = a.conversation_id AND role = 'user' AND id < a.id
)
WHERE a.role = 'assistant' AND a.rating IN (?, ?)
ORDER BY a.id
"""


def title_from(content: str) -> str:
    """A conversation's title from its first message: the first line with text, cut short."""
    line = next((line.strip() for line in content.splitlines() if line.strip()), "")
    if len(line) <= TITLE_LENGTH:
        return line
    return line[: TITLE_LENGTH - 1].rstrip() + "…"


def _connect(path: Path) -> sqlite3.Connection:
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


def _create_schema(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ConversationError(
            f"{path} was written by a newer version of LocalLLM; update LocalLLM to open it"
        )
    with db:
        db.executescript(_SCHEMA)
        columns = {row["name"] for row in db.execute("PRAGMA table_info(messages)")}
        if "details" not in columns:  # a file from before answers kept their check
            db.execute("ALTER TABLE messages ADD COLUMN details TEXT NOT NULL DEFAULT '{}'")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _next_touch(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COALESCE(MAX(touched), 0) + 1 FROM conversations").fetchone()[0])


def _touch(db: sqlite3.Connection, conversation_id: str, now: float, *, title: str) -> None:
    db.execute(
        "UPDATE conversations SET updated = ?, touched = ?, title = ? WHERE id = ?",
        (now, _next_touch(db), title, conversation_id),
    )


def _summary_row(db: sqlite3.Connection, conversation_id: str) -> sqlite3.Row:
    row = db.execute(f"{_SUMMARY} WHERE c.id = ? GROUP BY c.id", (conversation_id,)).fetchone()
    if row is None:
        raise _no_conversation(conversation_id)
    return row


def _no_conversation(conversation_id: str) -> ConversationError:
    return ConversationError(
        f"no conversation with id {conversation_id!r}; it may have been deleted"
    )


def _summary(row: sqlite3.Row) -> ConversationSummary:
    return ConversationSummary(
        id=row["id"],
        title=row["title"],
        collection=row["collection"],
        created=row["created"],
        updated=row["updated"],
        messages=row["messages"],
    )


def _message(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        id=row["id"],
        role=row["role"],
        content=row["content"],
        sources=json.loads(row["sources"]),
        created=row["created"],
        rating=row["rating"],
        details=json.loads(row["details"] or "{}"),
    )


def _example(row: sqlite3.Row) -> FeedbackExample:
    return FeedbackExample(
        conversation_id=row["conversation_id"],
        message_id=row["id"],
        question=row["question"],
        answer=row["answer"],
        sources=json.loads(row["sources"]),
        rating=row["rating"],
        created=row["rated"],
    )
