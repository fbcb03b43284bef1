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
from pathlib import Path
from types import TracebackType
from typing import Any

from localllm.chat.conversation_records import (
    FEEDBACK,
    MESSAGE,
    REGENERATIONS,
    SEARCH,
    SUMMARY,
    ConversationSummary,
    FeedbackExample,
    Regeneration,
    StoredMessage,
    example_of,
    message_of,
    regeneration_of,
    summary_of,
)
from localllm.chat.conversation_schema import SCHEMA_VERSION, ConversationError, connect

__all__ = [
    "SCHEMA_VERSION",
    "ConversationError",
    "ConversationStore",
    "ConversationSummary",
    "FeedbackExample",
    "Regeneration",
    "StoredMessage",
    "title_from",
]

ROLES = ("user", "assistant")
RATINGS = (1, -1)  # liked, disliked
TITLE_LENGTH = 60


class ConversationStore:
    """Conversations in the SQLite file at `path`; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = connect(self.path)

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
            added = _insert(db, now, conversation_id, role, content, sources, details)
            if not title and role == "user":
                title = title_from(content)
            _touch(db, conversation_id, now, title=title)
        return added

    def replace_answer(
        self,
        conversation_id: str,
        replaced_id: int,
        content: str,
        sources: Sequence[dict[str, Any]] = (),
        details: dict[str, Any] | None = None,
    ) -> int:
        """A regenerated answer in place of the last one, which is kept, superseded; its id."""
        now = time.time()
        with self._transaction() as db:
            last = _last_shown(db, conversation_id)
            if last is None or last["id"] != replaced_id or last["role"] != "assistant":
                raise ConversationError(
                    f"message {replaced_id} is not the last answer of this conversation: "
                    "only the last answer can be regenerated"
                )
            added = _insert(db, now, conversation_id, "assistant", content, sources, details)
            db.execute("UPDATE messages SET superseded_by = ? WHERE id = ?", (added, replaced_id))
            _touch(db, conversation_id, now, title=_summary_row(db, conversation_id)["title"])
        return added

    def replace_question(self, conversation_id: str, content: str) -> int:
        """The last question edited: the new one is added, the old one and what followed it
        (its answer) are kept, superseded by it; returns the new question's id."""
        if not content.strip():
            raise ConversationError("an edited question needs some text")
        now = time.time()
        with self._transaction() as db:
            title = _summary_row(db, conversation_id)["title"]
            asked = db.execute(
                "SELECT id, content FROM messages WHERE conversation_id = ? AND role = 'user'"
                " AND superseded_by IS NULL ORDER BY id DESC LIMIT 1",
                (conversation_id,),
            ).fetchone()
            if asked is None:
                raise ConversationError("this conversation has no question to edit yet")
            first = db.execute(
                "SELECT MIN(id) FROM messages WHERE conversation_id = ? AND role = 'user'"
                " AND superseded_by IS NULL",
                (conversation_id,),
            ).fetchone()[0]
            added = _insert(db, now, conversation_id, "user", content)
            db.execute(
                "UPDATE messages SET superseded_by = ? WHERE conversation_id = ? AND id >= ?"
                " AND id < ? AND superseded_by IS NULL",
                (added, conversation_id, asked["id"], added),
            )
            if asked["id"] == first and title == title_from(asked["content"]):
                title = title_from(content)  # the title was the question's own
            _touch(db, conversation_id, now, title=title)
        return added

    def set_collection(self, conversation_id: str, collection: str | None) -> None:
        self._update(conversation_id, "collection", collection)

    def rename(self, conversation_id: str, title: str) -> None:
        self._update(conversation_id, "title", title.strip())

    def conversations(self) -> list[ConversationSummary]:
        """Every conversation, the most recently changed first."""
        with self._transaction() as db:
            rows = db.execute(f"{SUMMARY} GROUP BY c.id ORDER BY c.touched DESC").fetchall()
        return [summary_of(row) for row in rows]

    def search(self, text: str) -> list[ConversationSummary]:
        """The conversations whose title or shown messages hold `text` (any case), most recently
        changed first; every conversation for blank text."""
        wanted = text.strip().casefold()
        if not wanted:
            return self.conversations()
        with self._transaction() as db:
            rows = db.execute(SEARCH, (wanted, wanted)).fetchall()
        return [summary_of(row) for row in rows]

    def get(self, conversation_id: str) -> ConversationSummary:
        with self._transaction() as db:
            return summary_of(_summary_row(db, conversation_id))

    def messages(self, conversation_id: str, *, superseded: bool = False) -> list[StoredMessage]:
        """The conversation's messages as shown, in the order they were added; with
        `superseded`, also those a regenerated answer or an edited question replaced."""
        shown_only = "" if superseded else " AND superseded_by IS NULL"
        with self._transaction() as db:
            _summary_row(db, conversation_id)
            rows = db.execute(
                f"{MESSAGE} WHERE conversation_id = ?{shown_only} ORDER BY id",
                (conversation_id,),
            ).fetchall()
        return [message_of(row) for row in rows]

    def message(self, message_id: int) -> StoredMessage:
        with self._transaction() as db:
            row = db.execute(f"{MESSAGE} WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise ConversationError(f"no message with id {message_id}; it may have been deleted")
        return message_of(row)

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
            rows = db.execute(FEEDBACK, wanted).fetchall()
        return [example_of(row) for row in rows]

    def regenerations(self) -> list[Regeneration]:
        """Every answer a regenerated one replaced, with its question and its replacement, in
        the order they were regenerated (an edited question's answer is not one)."""
        with self._transaction() as db:
            rows = db.execute(REGENERATIONS).fetchall()
        return [regeneration_of(row) for row in rows]

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


def title_from(content: str) -> str:
    """A conversation's title from its first message: the first line with text, cut short."""
    line = next((line.strip() for line in content.splitlines() if line.strip()), "")
    if len(line) <= TITLE_LENGTH:
        return line
    return line[: TITLE_LENGTH - 1].rstrip() + "…"


def _next_touch(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COALESCE(MAX(touched), 0) + 1 FROM conversations").fetchone()[0])


def _touch(db: sqlite3.Connection, conversation_id: str, now: float, *, title: str) -> None:
    db.execute(
        "UPDATE conversations SET updated = ?, touched = ?, title = ? WHERE id = ?",
        (now, _next_touch(db), title, conversation_id),
    )


def _insert(
    db: sqlite3.Connection,
    now: float,
    conversation_id: str,
    role: str,
    content: str,
    sources: Sequence[dict[str, Any]] = (),
    details: dict[str, Any] | None = None,
) -> int:
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
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _last_shown(db: sqlite3.Connection, conversation_id: str) -> sqlite3.Row | None:
    _summary_row(db, conversation_id)
    return db.execute(
        "SELECT id, role FROM messages WHERE conversation_id = ? AND superseded_by IS NULL"
        " ORDER BY id DESC LIMIT 1",
        (conversation_id,),
    ).fetchone()


def _summary_row(db: sqlite3.Connection, conversation_id: str) -> sqlite3.Row:
    row = db.execute(f"{SUMMARY} WHERE c.id = ? GROUP BY c.id", (conversation_id,)).fetchone()
    if row is None:
        raise _no_conversation(conversation_id)
    return row


def _no_conversation(conversation_id: str) -> ConversationError:
    return ConversationError(
        f"no conversation with id {conversation_id!r}; it may have been deleted"
    )
