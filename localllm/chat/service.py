"""The one place a chat answer is assembled, plain or grounded, for every face (UI, CLI, API).

A face turns what it was given into a `ChatRequest`, asks `ChatService.answer` (the model is loaded,
the documents searched and the prompt built; nothing is generated yet) and streams the answer it
gets back. `ChatService.reply` is the same, in a saved conversation; `regenerate` answers its last
question again and `edit` asks its last question anew, each keeping what it replaces, superseded.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from localllm.chat.conversations import ConversationError, ConversationStore, StoredMessage
from localllm.llm.base import ChatModel, FinishReason, GenerationParams, GenerationStats, Message
from localllm.llm.context import with_system
from localllm.llm.manager import LoadOptions, params_from_settings
from localllm.rag.answer import GroundedAnswer, is_decline
from localllm.rag.prompt import Source, Turn

if TYPE_CHECKING:
    from localllm.services import Services

Role = Literal["system", "user", "assistant"]
Cut = Literal["stopped", "length"]  # an answer ended by the user's Stop, or by the token limit
# A regenerated answer at temperature 0 (greedy decoding: the same answer again) is sampled at this.
REGENERATE_TEMPERATURE = 0.7


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation; an assistant's grounded answer keeps the sources it was given."""

    role: Role
    content: str
    sources: tuple[Source, ...] = ()

    @classmethod
    def from_stored(cls, message: StoredMessage) -> ChatMessage:
        sources = tuple(Source.from_dict(s) for s in message.sources)
        return cls(message.role, message.content, sources)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ChatRequest:
    """What to answer: the conversation (the last message is the question) and how."""

    messages: Sequence[ChatMessage] = ()
    model: str | None = None  # a name from the catalog; None: the default model
    load: LoadOptions | None = None  # None: the settings'
    params: GenerationParams | None = None  # None: the settings'
    collection: str | None = None  # grounded in this collection's documents; None: plain chat
    documents: Sequence[str] | None = None  # only these documents of the collection
    system_prompt: str | None = None  # plain chat; None: a system message given, else the settings'


def turns_from(messages: Sequence[ChatMessage]) -> list[Turn]:
    """Question/answer pairs with the sources each answer was given, for a grounded prompt."""
    turns: list[Turn] = []
    question: str | None = None
    for m in messages:
        if m.role == "user":
            question = m.content
        elif m.role == "assistant" and question is not None:
            turns.append(Turn(question, m.content, list(m.sources)))
            question = None
    return turns


def plain_messages(
    messages: Sequence[ChatMessage], system_prompt: str | None, default_system: str
) -> list[Message]:
    """The conversation as the model's messages, the system prompt first: `system_prompt`, else
    the last system message given, else `default_system`."""
    given = [m.content for m in messages if m.role == "system"]
    if system_prompt is None:
        system_prompt = given[-1] if given else default_system
    rest: list[Message] = [{"role": m.role, "content": m.content} for m in messages]
    return with_system(rest, system_prompt)


@dataclass
class ChatAnswer:
    """An answer ready to stream. After `stream()`, `text`, `stats` and the sources' `cited` are set."""

    model: ChatModel
    params: GenerationParams
    messages: list[Message]  # the prompt (for a declined grounded answer: not sent)
    grounded: GroundedAnswer | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)
    text: str = ""

    @property
    def sources(self) -> list[Source]:
        return self.grounded.sources if self.grounded else []

    @property
    def finish_reason(self) -> FinishReason:
        return self.stats.finish_reason

    @property
    def declined(self) -> bool:
        """A grounded answer that says the documents don't hold it."""
        if self.grounded is None:
            return False
        return self.grounded.declined or is_decline(self.text)

    def cancel(self) -> None:
        """End the answer at its next token (the model is free for the next one)."""
        self.stats.cancel.set()

    def stream(self) -> Iterator[str]:
        if self.grounded is not None:
            pieces = self.grounded.stream(self.model, self.params, self.stats)
        else:
            pieces = self.model.stream_chat(self.messages, self.params, self.stats)
        for piece in pieces:
            self.text += piece
            yield piece
        if self.grounded is not None:
            self.text = self.grounded.text  # its citations checked, or a quote, or a decline

    def to_dict(self) -> dict[str, object]:
        """The grounded answer's JSON (`localllm ask --json`), or the plain answer's text."""
        if self.grounded is not None:
            return self.grounded.to_dict()
        return {"answer": self.text}


@dataclass
class Reply:
    """A turn of a saved conversation, as it streams."""

    conversation_id: str
    question_id: int
    collection: str | None
    sources: list[Source] = field(default_factory=list)
    text: str = ""
    message_id: int | None = None  # the saved answer, once complete (or stopped)
    declined: bool = False
    model_text: str = ""  # what the model wrote, when the answer shown is not that
    outcome: str = "answered"
    cut: Cut | None = None  # how the answer was cut short, if it was
    replaced_id: int | None = None  # the answer a regenerated one replaces (kept, superseded)
    stopping: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def cancel(self) -> None:
        """End the answer at its next token: it is saved as it is, marked stopped."""
        self.stopping.set()


# How an answer is saved once it is written: (text, sources, details) -> the saved message's id.
Save = Callable[[str, list[dict[str, Any]], dict[str, Any] | None], int]


def regeneration_params(params: GenerationParams, seed: int) -> GenerationParams:
    """A regenerated answer's settings: the user's with a fresh `seed`; at temperature 0, where
    any seed gives the same answer, REGENERATE_TEMPERATURE."""
    return replace(params, temperature=params.temperature or REGENERATE_TEMPERATURE, seed=seed)


class ChatService:
    def __init__(self, services: Services) -> None:
        self.services = services

    def answer(self, request: ChatRequest) -> ChatAnswer:
        """Load the model, search the documents (grounded), and build the prompt.

        Raises ValueError when the conversation does not end with the user's question, and the
        LocalLLMError of whatever fails (an unknown model or document, a prompt too long).
        """
        if not request.messages or request.messages[-1].role != "user":
            raise ValueError("the last message must be the user's question")
        settings = self.services.settings
        params = request.params or params_from_settings(settings)
        model = self.services.models.get(request.model, request.load)
        if not request.collection:
            messages = plain_messages(
                request.messages, request.system_prompt, settings.system_prompt
            )
            return ChatAnswer(model, params, messages)
        grounded = self.services.grounded(model).prepare(
            model,
            request.messages[-1].content,
            request.collection,
            params,
            history=turns_from(request.messages[:-1]),
            documents=request.documents or None,
        )
        return ChatAnswer(model, params, grounded.messages, grounded)

    def reply(
        self, question: str, request: ChatRequest, *, conversation_id: str | None
    ) -> Iterator[tuple[Reply, str]]:
        """Answer `question` in a saved conversation (a new one when None): (reply, new text).

        `request.messages` is ignored: the conversation's saved messages are the history. The first
        item comes before the model starts, with the sources; the answer is saved when the stream
        ends, also when it is stopped early.
        """
        conversations: ConversationStore = self.services.conversations
        earlier = conversations.messages(conversation_id) if conversation_id else []
        answer = self._prepare(earlier, question, request)
        # Saved only once the question could be asked: a failed one leaves no half turn behind.
        if conversation_id is None:
            conversation_id = conversations.create(collection=request.collection)
        else:
            conversations.set_collection(conversation_id, request.collection)
        question_id = conversations.add_message(conversation_id, "user", question)
        result = Reply(conversation_id, question_id, request.collection, answer.sources)
        yield from _streamed(answer, result, self._adder(conversation_id))

    def regenerate(
        self, request: ChatRequest, *, conversation_id: str
    ) -> Iterator[tuple[Reply, str]]:
        """The conversation's last question answered again, as `reply` streams it; the new answer
        replaces the last one, which is kept, superseded. At temperature 0 (the same answer every
        time) the new one is sampled at REGENERATE_TEMPERATURE; always with a fresh seed."""
        conversations: ConversationStore = self.services.conversations
        shown = conversations.messages(conversation_id)
        replaced = shown.pop() if shown and shown[-1].role == "assistant" else None
        if not shown or shown[-1].role != "user":
            raise ConversationError("this conversation has no answer to regenerate yet")
        asked = shown.pop()
        params = request.params or params_from_settings(self.services.settings)
        fresh = replace(request, params=regeneration_params(params, random.randrange(2**31)))
        answer = self._prepare(shown, asked.content, fresh)
        conversations.set_collection(conversation_id, request.collection)
        result = Reply(conversation_id, asked.id, request.collection, answer.sources)
        if replaced is None:  # the question's answer was never written: write it now
            yield from _streamed(answer, result, self._adder(conversation_id))
            return
        result.replaced_id = replaced.id

        def save(text: str, sources: list[dict[str, Any]], details: dict[str, Any] | None) -> int:
            return conversations.replace_answer(
                conversation_id, replaced.id, text, sources, details
            )

        yield from _streamed(answer, result, save)

    def edit(
        self, question: str, request: ChatRequest, *, conversation_id: str
    ) -> Iterator[tuple[Reply, str]]:
        """The conversation's last question replaced by `question` and answered, as `reply`
        streams it; the old question and its answer are kept, superseded."""
        conversations: ConversationStore = self.services.conversations
        shown = conversations.messages(conversation_id)
        last = max((i for i, m in enumerate(shown) if m.role == "user"), default=None)
        if last is None:
            raise ConversationError("this conversation has no question to edit yet")
        answer = self._prepare(shown[:last], question, request)
        conversations.set_collection(conversation_id, request.collection)
        question_id = conversations.replace_question(conversation_id, question)
        result = Reply(conversation_id, question_id, request.collection, answer.sources)
        yield from _streamed(answer, result, self._adder(conversation_id))

    def _prepare(
        self, earlier: Sequence[StoredMessage], question: str, request: ChatRequest
    ) -> ChatAnswer:
        history = [ChatMessage.from_stored(m) for m in earlier]
        return self.answer(replace(request, messages=[*history, ChatMessage("user", question)]))

    def _adder(self, conversation_id: str) -> Save:
        conversations: ConversationStore = self.services.conversations

        def save(text: str, sources: list[dict[str, Any]], details: dict[str, Any] | None) -> int:
            return conversations.add_message(conversation_id, "assistant", text, sources, details)

        return save


def _streamed(answer: ChatAnswer, result: Reply, save: Save) -> Iterator[tuple[Reply, str]]:
    """`result` as `answer` streams into it: first before the model starts, with the sources, then
    with each piece. When the stream ends, also when it is stopped early, the answer is saved."""
    result.stopping = answer.stats.cancel
    yield result, ""
    finished = False
    try:
        for piece in answer.stream():
            result.text += piece
            yield result, piece
        finished = True
    finally:
        grounded = answer.grounded
        if grounded is not None and result.text:
            if grounded.model_text != result.text:  # stopped before its stream could check
                grounded.check(result.text)
            result.text, result.outcome = grounded.text, grounded.outcome
            result.model_text = grounded.model_text
        result.declined = answer.declined
        result.cut = cut_of(answer, finished)
        # Stopped before its first token (Stop pressed while it waited): saved empty, marked.
        if result.text or answer.stats.cancel.is_set():
            details = answer_details(grounded) if grounded is not None and result.text else {}
            if result.cut:
                details["cut"] = result.cut
            sources = [s.to_dict() for s in result.sources]
            result.message_id = save(result.text, sources, details or None)


def cut_of(answer: ChatAnswer, finished: bool) -> Cut | None:
    """How an answer was cut short: "stopped" (its stream closed, or cancelled), "length" (the
    token limit), or None (it ended on its own)."""
    if not finished or answer.stats.cancel.is_set():
        return "stopped"
    return "length" if answer.finish_reason == "length" else None


def answer_details(grounded: GroundedAnswer) -> dict[str, object]:
    """What a saved grounded answer keeps besides its text and sources, to be shown as it was."""
    shown = grounded.to_dict()
    return {key: shown[key] for key in ("outcome", "model_answer", "attribution")}
