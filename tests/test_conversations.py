"""Saved conversations and answer ratings, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from localllm.chat.conversations import ConversationError, ConversationStore, title_from
from localllm.errors import LocalLLMError

SOURCE = {"file": "debian-faq.en.pdf", "page": 13, "text": "No new functionality…", "score": 0.5}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "deep" / "folder" / "conversations.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[ConversationStore]:
    with ConversationStore(path) as opened:
        yield opened


def exchange(store: ConversationStore, conversation: str, question: str, answer: str) -> int:
    """A question and its answer; returns the answer's id."""
    store.add_message(conversation, "user", question)
    return store.add_message(conversation, "assistant", answer, [SOURCE])


def test_a_conversation_keeps_its_messages_in_order(store: ConversationStore, path: Path) -> None:
    assert path.is_file(), "the parent folders and the file are created"
    conversation = store.create(collection="docs")
    assert len(conversation) == 32 and int(conversation, 16) >= 0
    answer = exchange(store, conversation, "What is Debian?", "An operating system.")
    store.add_message(conversation, "user", "And Ubuntu?")

    messages = store.messages(conversation)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "What is Debian?"),
        ("assistant", "An operating system."),
        ("user", "And Ubuntu?"),
    ]
    assert messages[1].id == answer
    assert messages[1].sources == [SOURCE] and messages[0].sources == []
    assert [m.rating for m in messages] == [None, None, None]
    assert messages[0].created <= messages[1].created <= messages[2].created

    summary = store.get(conversation)
    assert (summary.title, summary.collection, summary.messages) == ("What is Debian?", "docs", 3)
    assert summary.created <= summary.updated == messages[2].created


def test_the_first_user_message_names_an_untitled_conversation(store: ConversationStore) -> None:
    untitled = store.create()
    assert store.get(untitled).title == ""
    store.add_message(untitled, "assistant", "Hello! Ask me about your documents.")
    assert store.get(untitled).title == "", "an answer doesn't name it"
    store.add_message(untitled, "user", "\n  How do I upgrade?  \nI run bullseye.")
    store.add_message(untitled, "user", "Another question")
    assert store.get(untitled).title == "How do I upgrade?"

    titled = store.create("Upgrades")
    store.add_message(titled, "user", "How do I upgrade?")
    assert store.get(titled).title == "Upgrades"


def test_a_long_first_line_is_cut_to_60_characters() -> None:
    title = title_from("x" * 59 + " and then some more words")
    assert len(title) == 60 and title.endswith("…")
    assert title_from("y" * 60) == "y" * 60
    assert title_from("   \n\n") == ""


def test_the_most_recently_changed_comes_first(store: ConversationStore) -> None:
    first, second, third = (store.create(name) for name in ("first", "second", "third"))
    assert [c.id for c in store.conversations()] == [third, second, first]
    store.add_message(first, "user", "back to the first one")
    assert [c.id for c in store.conversations()] == [first, third, second]
    assert [c.messages for c in store.conversations()] == [1, 0, 0]


def test_rename_and_set_collection(store: ConversationStore) -> None:
    conversation = store.create("old name", collection="a")
    store.rename(conversation, "  new name ")
    store.set_collection(conversation, None)
    summary = store.get(conversation)
    assert (summary.title, summary.collection) == ("new name", None)
    store.set_collection(conversation, "b")
    assert store.get(conversation).collection == "b"


def test_everything_is_there_after_reopening(path: Path) -> None:
    with ConversationStore(path) as store:
        conversation = store.create(collection="docs")
        answer = exchange(store, conversation, "What is Debian?", "An operating system.")
        store.rate(answer, 1)
        before = (store.conversations(), store.messages(conversation), store.feedback())

    with ConversationStore(path) as reopened:
        assert (reopened.conversations(), reopened.messages(conversation), reopened.feedback()) == (
            before
        )
        assert before[2][0].message_id == answer


def test_delete_takes_the_messages_and_their_ratings(store: ConversationStore, path: Path) -> None:
    doomed, kept = store.create(), store.create()
    store.rate(exchange(store, doomed, "Q1", "A1"), 1)
    store.rate(exchange(store, kept, "Q2", "A2"), 1)
    assert len(store.feedback()) == 2

    store.delete(doomed)
    assert [c.id for c in store.conversations()] == [kept]
    assert [e.question for e in store.feedback()] == ["Q2"]
    with pytest.raises(ConversationError, match="no conversation with id"):
        store.messages(doomed)
    with closing(sqlite3.connect(path)) as raw:
        assert raw.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 2
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_feedback_pairs_each_rated_answer_with_the_question_before_it(
    store: ConversationStore,
) -> None:
    one, two = store.create(), store.create()
    liked = exchange(store, one, "What is apt?", "A package manager.")
    disliked = exchange(store, two, "What is dpkg?", "A kind of cheese.")
    cleared = exchange(store, one, "And aptitude?", "Another front end.")
    # Two answers in a row (a regenerated one): the question is still the last user message.
    retry = store.add_message(one, "assistant", "A text-mode front end to apt.", [SOURCE])
    store.add_message(one, "user", "Thanks")
    for message, rating in ((liked, 1), (disliked, -1), (cleared, 1), (retry, 1), (cleared, 0)):
        store.rate(message, rating)

    liked_examples = store.feedback()
    assert [(e.conversation_id, e.message_id, e.question, e.answer) for e in liked_examples] == [
        (one, liked, "What is apt?", "A package manager."),
        (one, retry, "And aptitude?", "A text-mode front end to apt."),
    ]
    assert all(e.rating == 1 and e.sources == [SOURCE] and e.created > 0 for e in liked_examples)
    assert [(e.question, e.rating) for e in store.feedback(-1)] == [("What is dpkg?", -1)]
    assert [e.message_id for e in store.feedback(None)] == [liked, disliked, retry]
    assert [m.rating for m in store.messages(one)] == [None, 1, None, None, 1, None]


def test_only_answers_take_only_ratings(store: ConversationStore) -> None:
    conversation = store.create()
    question = store.add_message(conversation, "user", "Why?")
    answer = store.add_message(conversation, "assistant", "Because.")
    with pytest.raises(ConversationError, match="only answers can be rated"):
        store.rate(question, 1)
    for bad in (2, 5, -2):
        with pytest.raises(ConversationError, match="a rating is 1"):
            store.rate(answer, bad)
    with pytest.raises(ConversationError, match="no message with id 999"):
        store.rate(999, 1)
    with pytest.raises(ConversationError, match="liked"):
        store.feedback(0)
    assert store.feedback(None) == []


def test_unknown_ids_and_bad_roles(store: ConversationStore) -> None:
    ghost = "0" * 32
    calls = {
        "get": lambda: store.get(ghost),
        "messages": lambda: store.messages(ghost),
        "add_message": lambda: store.add_message(ghost, "user", "hello"),
        "rename": lambda: store.rename(ghost, "x"),
        "set_collection": lambda: store.set_collection(ghost, "x"),
        "delete": lambda: store.delete(ghost),
    }
    for name, call in calls.items():
        with pytest.raises(ConversationError, match=f"no conversation with id '{ghost}'"):
            call()
            pytest.fail(f"{name} accepted an unknown id")
    conversation = store.create()
    for role in ("system", "tool", "User", ""):
        with pytest.raises(ConversationError, match="role is 'user' or 'assistant'"):
            store.add_message(conversation, role, "hi")
    assert store.messages(conversation) == []
    assert issubclass(ConversationError, LocalLLMError)


def test_a_closed_store_says_so(path: Path) -> None:
    store = ConversationStore(path)
    store.close()
    store.close()
    with pytest.raises(ConversationError, match="has been closed"):
        store.conversations()


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    garbage = tmp_path / "conversations.sqlite"
    garbage.write_bytes(b"this is not SQLite at all\n" * 100)
    with pytest.raises(ConversationError, match="can't be read as saved conversations"):
        ConversationStore(garbage)


def test_threads_share_one_store(store: ConversationStore) -> None:
    conversations = [store.create(f"thread {n}") for n in range(4)]
    errors: list[BaseException] = []

    def talk(conversation: str) -> None:
        try:
            for n in range(50):
                role = "user" if n % 2 == 0 else "assistant"
                store.add_message(conversation, role, f"{conversation} {n}", [SOURCE])
                store.conversations()
        except BaseException as e:  # reported below, in the test's own thread
            errors.append(e)

    threads = [threading.Thread(target=talk, args=(c,)) for c in conversations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for conversation in conversations:
        messages = store.messages(conversation)
        assert [m.content for m in messages] == [f"{conversation} {n}" for n in range(50)]
        assert store.get(conversation).messages == 50
    ids = [m.id for c in conversations for m in store.messages(c)]
    assert len(set(ids)) == 200


def test_a_store_locked_by_another_program_is_a_clear_error_and_loses_nothing(
    store: ConversationStore, path: Path
) -> None:
    kept = store.create("Before the lock")
    store.add_message(kept, "user", "Where does the heron nest?")
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")  # a second app on the same data folder, mid-write
        with pytest.raises(ConversationError, match="locked by another program"):
            store.add_message(kept, "assistant", "By the north pond.")
        other.execute("ROLLBACK")
    store.add_message(kept, "assistant", "By the north pond.")
    assert [m.content for m in store.messages(kept)] == [
        "Where does the heron nest?",
        "By the north pond.",
    ]


DETAILS = {
    "outcome": "answered",
    "model_answer": "It is in contrib. The moon is cheese.",
    "attribution": [
        {"sentence": "It is in contrib.", "source": 1, "support": 0.8, "span": [0, 17]},
        {"sentence": "The moon is cheese.", "source": None, "support": 0.1, "span": None},
    ],
}


def test_an_answer_keeps_its_check_for_showing_it_again(path: Path) -> None:
    with ConversationStore(path) as store:
        conversation = store.create()
        store.add_message(conversation, "user", "Where is Google Earth?")
        answer = store.add_message(conversation, "assistant", "In contrib [1].", [SOURCE], DETAILS)
        plain = store.add_message(conversation, "assistant", "Hello.")
    with ConversationStore(path) as reopened:
        question, checked, unchecked = reopened.messages(conversation)
        assert checked.details == DETAILS and checked.id == answer
        assert question.details == {} and unchecked.details == {}
        assert reopened.message(answer) == checked and reopened.message(plain) == unchecked
        with pytest.raises(ConversationError, match="no message with id 999"):
            reopened.message(999)


# The file as LocalLLM wrote it before answers kept their check.
OLD_SCHEMA = """
CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '', collection TEXT,
    created REAL NOT NULL, updated REAL NOT NULL, touched INTEGER NOT NULL);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')), content TEXT NOT NULL,
    sources TEXT NOT NULL DEFAULT '[]', created REAL NOT NULL,
    rating INTEGER CHECK (rating IN (1, -1)), rated REAL);
INSERT INTO conversations VALUES ('old', 'Where is Google Earth?', 'faq', 1.0, 2.0, 1);
INSERT INTO messages (conversation_id, role, content, created)
    VALUES ('old', 'user', 'Where is Google Earth?', 1.0);
INSERT INTO messages (conversation_id, role, content, sources, created, rating)
    VALUES ('old', 'assistant', 'In contrib [1].', '[{"n": 1}]', 2.0, 1);
PRAGMA user_version = 1;
"""


def test_a_file_from_before_answers_kept_their_check_opens_and_keeps_it_from_then_on(
    path: Path,
) -> None:
    path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(path)) as old:
        old.executescript(OLD_SCHEMA)
    with ConversationStore(path) as store:
        question, answer = store.messages("old")
        assert (question.content, answer.content, answer.sources) == (
            "Where is Google Earth?",
            "In contrib [1].",
            [{"n": 1}],
        )
        assert answer.details == {} and answer.rating == 1
        assert [e.answer for e in store.feedback()] == ["In contrib [1]."]
        store.add_message("old", "user", "And the moon?")
        added = store.add_message("old", "assistant", "Cheese.", [SOURCE], DETAILS)
    with ConversationStore(path) as again:  # the column is added once
        assert again.message(added).details == DETAILS
        assert [m.details for m in again.messages("old")][:2] == [{}, {}]
    with closing(sqlite3.connect(path)) as raw:
        columns = [row[1] for row in raw.execute("PRAGMA table_info(messages)")]
        assert columns.count("details") == 1
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1, "older versions still open it"


# regenerate, edit, search


def test_a_regenerated_answer_replaces_the_last_one_which_is_kept(
    store: ConversationStore, path: Path
) -> None:
    conversation = store.create()
    first = exchange(store, conversation, "What is apt?", "A fruit.")
    second = store.replace_answer(conversation, first, "A package manager.", [SOURCE], DETAILS)
    third = store.replace_answer(conversation, second, "The package tool.")
    shown = store.messages(conversation)
    assert [(m.role, m.content) for m in shown] == [
        ("user", "What is apt?"),
        ("assistant", "The package tool."),
    ]
    assert store.get(conversation).messages == 2, "the list counts what is shown"
    everything = store.messages(conversation, superseded=True)
    assert [(m.id, m.superseded_by) for m in everything[1:]] == [
        (first, second),
        (second, third),
        (third, None),
    ]
    assert store.message(second).details == DETAILS and store.message(second).sources == [SOURCE]
    with ConversationStore(path) as reopened:
        assert [m.content for m in reopened.messages(conversation)][1:] == ["The package tool."]
    # Only the answer shown last can be replaced.
    with pytest.raises(ConversationError, match="only the last answer can be regenerated"):
        store.replace_answer(conversation, first, "Again.")
    store.add_message(conversation, "user", "Thanks")
    with pytest.raises(ConversationError, match="only the last answer"):
        store.replace_answer(conversation, third, "Again.")
    assert len(store.messages(conversation, superseded=True)) == 5, "nothing was added"


def test_regenerations_pair_each_replaced_answer_with_its_replacement_and_rating(
    store: ConversationStore,
) -> None:
    """What a preference pair is made of: question, rejected (replaced), chosen (replacement),
    the replacement's rating, and whether it is the answer the user kept."""
    one, two = store.create(), store.create()
    fruit = exchange(store, one, "What is apt?", "A fruit.")
    tool = store.replace_answer(one, fruit, "A package manager.")
    store.rate(tool, 1)
    store.add_message(one, "user", "And dpkg?")
    cheese = store.add_message(one, "assistant", "Cheese.")
    store.rate(cheese, -1)
    low = store.replace_answer(one, cheese, "The low-level tool.")
    lower = store.replace_answer(one, low, "The tool under apt.")
    edited = exchange(store, two, "What is Debian?", "A bird.")
    store.replace_question(two, "What is Debian GNU/Linux?")  # an edit, not a regeneration
    store.add_message(two, "assistant", "An operating system.")

    pairs = store.regenerations()
    assert [(p.question, p.replaced, p.replacement, p.rating, p.kept) for p in pairs] == [
        ("What is apt?", "A fruit.", "A package manager.", 1, True),
        ("And dpkg?", "Cheese.", "The low-level tool.", None, False),
        ("And dpkg?", "The low-level tool.", "The tool under apt.", None, True),
    ]
    assert [(p.replaced_id, p.replacement_id) for p in pairs] == [
        (fruit, tool),
        (cheese, low),
        (low, lower),
    ]
    assert [p.replaced_rating for p in pairs] == [None, -1, None]
    assert {p.conversation_id for p in pairs} == {one}
    assert edited not in {p.replaced_id for p in pairs}


def test_editing_the_last_question_keeps_the_old_turn_superseded(
    store: ConversationStore,
) -> None:
    conversation = store.create()
    exchange(store, conversation, "What is apt?", "A package manager.")
    old_answer = exchange(store, conversation, "And aptitud?", "A typo.")
    asked = store.replace_question(conversation, "And aptitude?")
    shown = store.messages(conversation)
    assert [m.content for m in shown] == ["What is apt?", "A package manager.", "And aptitude?"]
    assert shown[-1].id == asked
    superseded = [m for m in store.messages(conversation, superseded=True) if m.superseded_by]
    assert [(m.content, m.superseded_by) for m in superseded] == [
        ("And aptitud?", asked),
        ("A typo.", asked),
    ]
    assert store.message(old_answer).superseded_by == asked
    assert store.get(conversation).title == "What is apt?", "a later question leaves the title"
    # The question again before it was answered (its answer was stopped before a word): only it goes.
    again = store.replace_question(conversation, "And aptitude, in short?")
    assert [m.content for m in store.messages(conversation)][2:] == ["And aptitude, in short?"]
    assert store.message(asked).superseded_by == again
    with pytest.raises(ConversationError, match="needs some text"):
        store.replace_question(conversation, "  ")
    with pytest.raises(ConversationError, match="no question to edit"):
        store.replace_question(store.create(), "Hi")


def test_an_edited_first_question_renames_the_chat_unless_the_user_named_it(
    store: ConversationStore,
) -> None:
    named_by_question, named_by_user = store.create(), store.create()
    for conversation in (named_by_question, named_by_user):
        exchange(store, conversation, "Waht is apt?", "Hm?")
    store.rename(named_by_user, "Package tools")
    for conversation in (named_by_question, named_by_user):
        store.replace_question(conversation, "What is apt?")
    assert store.get(named_by_question).title == "What is apt?"
    assert store.get(named_by_user).title == "Package tools"


def test_search_finds_titles_and_shown_messages_in_any_case(store: ConversationStore) -> None:
    apt, heron, empty = store.create(), store.create(), store.create("Notes on Ärzte")
    exchange(store, apt, "What is apt?", "A package manager for Debian.")
    old = exchange(store, heron, "Where does the heron nest?", "By the OTTER pond.")
    store.replace_answer(heron, old, "By the north pond.")
    assert [c.id for c in store.search("debian")] == [apt]
    assert [c.id for c in store.search("HERON")] == [heron]
    assert [c.id for c in store.search("pond")] == [heron]
    assert store.search("otter") == [], "a superseded answer is not searched"
    assert [c.id for c in store.search("ärzte")] == [empty], "case folded beyond ASCII"
    assert [c.id for c in store.search("  ")] == [c.id for c in store.conversations()]
    assert [c.id for c in store.search("%")] == [], "the text is literal, not a pattern"
    assert store.search("it's") == []
    assert [c.id for c in store.search("what is")] == [apt]
    store.add_message(empty, "user", "What is dpkg?")
    assert [c.id for c in store.search("what is")] == [empty, apt], "last changed first"


def test_a_file_from_before_regenerate_opens_with_every_message_shown(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(path)) as old:
        old.executescript(OLD_SCHEMA)
    with ConversationStore(path) as store:
        _question, answer = store.messages("old")
        assert answer.superseded_by is None and store.get("old").messages == 2
        store.replace_answer("old", answer.id, "In the contrib area [1].")
        assert store.regenerations()[0].replaced == "In contrib [1]."
    with closing(sqlite3.connect(path)) as raw:
        columns = [row[1] for row in raw.execute("PRAGMA table_info(messages)")]
        assert columns.count("superseded_by") == 1
