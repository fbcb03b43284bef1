"""One conversation turn as the app runs it: plain or grounded, saved as it is made."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from localllm.conversations import ConversationStore, StoredMessage
from localllm.index.pages import render_page
from localllm.index.store import DocumentStore, StoreError
from localllm.llm.base import ChatModel, GenerationParams, Message
from localllm.llm.conversation import with_system
from localllm.rag.answer import GroundedChat, is_decline
from localllm.rag.prompt import Source, Turn


@dataclass
class Reply:
    conversation_id: str
    question_id: int
    collection: str | None
    sources: list[Source] = field(default_factory=list)
    text: str = ""
    message_id: int | None = None  # the saved answer, once complete (or stopped)
    declined: bool = False


def turns_from(messages: Sequence[StoredMessage]) -> list[Turn]:
    """Question/answer pairs with the sources each answer was given, for the next prompt."""
    turns: list[Turn] = []
    question: str | None = None
    for m in messages:
        if m.role == "user":
            question = m.content
        elif question is not None:
            turns.append(Turn(question, m.content, [Source.from_dict(s) for s in m.sources]))
            question = None
    return turns


def plain_history(messages: Sequence[StoredMessage]) -> list[Message]:
    return [{"role": m.role, "content": m.content} for m in messages]  # type: ignore[misc]


def reply(
    conversations: ConversationStore,
    model: ChatModel,
    params: GenerationParams,
    question: str,
    *,
    conversation_id: str | None,
    collection: str | None,
    grounded: GroundedChat | None,
    system_prompt: str,
    documents: Sequence[str] | None = None,
) -> Iterator[tuple[Reply, str]]:
    """Answer `question` in a conversation (a new one when None), yielding (reply, new text).

    The first item comes before the model starts, with the sources; the answer is saved when the
    stream ends, also when it is stopped early.
    """
    earlier = conversations.messages(conversation_id) if conversation_id else []
    sources: list[Source] = []
    if collection and grounded is not None:
        answer = grounded.prepare(
            model,
            question,
            collection,
            params,
            history=turns_from(earlier),
            documents=documents or None,
        )
        sources = answer.sources
        pieces = answer.stream(model, params)
    else:
        messages = with_system(
            [*plain_history(earlier), {"role": "user", "content": question}], system_prompt
        )
        pieces = model.stream_chat(messages, params)
    # Saved only once the question could be asked: a failed one leaves no half turn behind.
    if conversation_id is None:
        conversation_id = conversations.create(collection=collection)
    else:
        conversations.set_collection(conversation_id, collection)
    question_id = conversations.add_message(conversation_id, "user", question)
    result = Reply(conversation_id, question_id, collection, sources)
    yield result, ""
    try:
        for piece in pieces:
            result.text += piece
            yield result, piece
    finally:
        result.declined = bool(collection) and is_decline(result.text)
        if result.text:
            result.message_id = conversations.add_message(
                conversation_id,
                "assistant",
                result.text,
                [s.to_dict() for s in result.sources],
            )


def source_page(store: DocumentStore, collection: str, source: Source, width: int = 900) -> object:
    """The page a source starts on, rendered with the source's passage highlighted (a PIL image).

    Raises StoreError when the document is gone, PageRenderError when its file can't be drawn.
    """
    records = store.find(collection, doc_id=source.doc_id) if source.doc_id else []
    if not records:
        raise StoreError(f"{source.file} is no longer in collection {collection!r}")
    path = Path(records[0].source)
    if source.page is None or path.suffix.lower() != ".pdf":
        raise StoreError(f"{source.file} has no pages to show; the passage is its text")
    boxes = [box for page, box in source.boxes if page == source.page]
    return render_page(path, source.page, boxes, width=width)
