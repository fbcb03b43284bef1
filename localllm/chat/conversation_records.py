"""What the saved conversations hand out, and the queries and rows they are read from."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


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
    # "cut": "stopped" (the user's Stop) or "length" (the token limit) for an answer cut short
    details: dict[str, Any] = field(default_factory=dict)
    superseded_by: int | None = None  # the message that replaced it (kept, hidden)


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


@dataclass
class Regeneration:
    """An answer replaced by a regenerated one to the same question: a preference pair, the
    replacement preferred where the user kept it (`kept`) and did not dislike it (`rating`)."""

    conversation_id: str
    question: str
    replaced_id: int
    replaced: str
    replaced_rating: int | None
    replacement_id: int
    replacement: str
    rating: int | None  # the replacement's: 1 liked, -1 disliked
    kept: bool  # the replacement is still shown (not itself regenerated, nor its question edited)


MESSAGE = "SELECT id, role, content, sources, details, created, rating, superseded_by FROM messages"
SUMMARY = (
    "SELECT c.id, c.title, c.collection, c.created, c.updated, COUNT(m.id) AS messages"
    " FROM conversations c"
    " LEFT JOIN messages m ON m.conversation_id = c.id AND m.superseded_by IS NULL"
)
# Both placeholders are the folded text sought: in the title, or in a message shown.
SEARCH = f"""
{SUMMARY}
WHERE instr(folded(c.title), ?) OR c.id IN (
    SELECT conversation_id FROM messages
    WHERE superseded_by IS NULL AND instr(folded(content), ?)
)
GROUP BY c.id ORDER BY c.touched DESC
"""

# Both placeholders are ratings to include; the question is the last user message before the answer.
FEEDBACK = """
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

# The question of a replaced answer is the last user message before it; so is its replacement's.
REGENERATIONS = """
SELECT a.conversation_id, q.content AS question, a.id AS replaced_id, a.content AS replaced,
       a.rating AS replaced_rating, b.id AS replacement_id, b.content AS replacement,
       b.rating, b.superseded_by IS NULL AS kept
FROM messages a
JOIN messages b ON b.id = a.superseded_by AND b.role = 'assistant'
JOIN messages q ON q.id = (
    SELECT MAX(id) FROM messages
    WHERE conversation_id = a.conversation_id AND role = 'user' AND id < a.id
)
WHERE a.role = 'assistant'
ORDER BY b.id, a.id
"""


def summary_of(row: sqlite3.Row) -> ConversationSummary:
    return ConversationSummary(
        id=row["id"],
        title=row["title"],
        collection=row["collection"],
        created=row["created"],
        updated=row["updated"],
        messages=row["messages"],
    )


def message_of(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        id=row["id"],
        role=row["role"],
        content=row["content"],
        sources=json.loads(row["sources"]),
        created=row["created"],
        rating=row["rating"],
        details=json.loads(row["details"] or "{}"),
        superseded_by=row["superseded_by"],
    )


def example_of(row: sqlite3.Row) -> FeedbackExample:
    return FeedbackExample(
        conversation_id=row["conversation_id"],
        message_id=row["id"],
        question=row["question"],
        answer=row["answer"],
        sources=json.loads(row["sources"]),
        rating=row["rating"],
        created=row["rated"],
    )


def regeneration_of(row: sqlite3.Row) -> Regeneration:
    return Regeneration(
        conversation_id=row["conversation_id"],
        question=row["question"],
        replaced_id=row["replaced_id"],
        replaced=row["replaced"],
        replaced_rating=row["replaced_rating"],
        replacement_id=row["replacement_id"],
        replacement=row["replacement"],
        rating=row["rating"],
        kept=bool(row["kept"]),
    )
