"""The Chat tab's answering events: a new question, the last answer regenerated, the last question
edited, and Stop. Each streams its answer into the Chatbot, then shows the conversation as saved."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from localllm.chat.service import ChatRequest, Reply
from localllm.config import Settings
from localllm.errors import LocalLLMError
from localllm.llm.manager import LoadOptions, params_from_settings
from localllm.services import Services
from localllm.ui.chat_view import conversation_choices, display_messages, source_radio

# What an answering event outputs, in this order.
RESPOND = (
    "chatbot",
    "display",
    "message",
    "conversation",
    "message_ids",
    "sources_state",
    "sources",
    "status",
    "conversations",
    "passage",
    "page_image",
)

Shown = list[dict[str, str]]  # the messages the Chatbot shows


def answering(**changed: Any) -> tuple[Any, ...]:
    """What the answer's event outputs, in RESPOND's order: the values named, the rest unchanged."""
    return tuple(changed.get(name, gr.skip()) for name in RESPOND)


def no_page() -> Any:
    return gr.update(value=None, visible=False)


def chat_request(
    settings: Settings,
    model_name: str | None,
    collection_name: str | None,
    only_documents: list[str] | None,
    system_prompt: str,
    temp: float,
    nucleus: float,
    new_tokens: float,
    stop_lines: str,
    ctx: float | None,
    n_threads: float | None,
    n_gpu: float | None,
) -> ChatRequest:
    """The Chat tab's pickers and Parameters as the request every face sends."""
    options = LoadOptions(
        int(ctx or 0), int(n_threads or 0), int(n_gpu if n_gpu is not None else -1)
    )
    params = params_from_settings(
        settings,
        temperature=float(temp),
        top_p=float(nucleus),
        max_tokens=int(new_tokens),
        stop=tuple(line for line in (stop_lines or "").splitlines() if line),
    )
    return ChatRequest(
        model=model_name,
        load=options,
        params=params,
        collection=collection_name or None,
        documents=only_documents or None,
        system_prompt=system_prompt,
    )


class Answering:
    """The answer each open page is writing, so that its Stop ends that answer at the next token
    (saved, marked stopped) and the page then shows it as saved. A Stop while the answer is still
    being prepared (the model loading, the documents searched) ends it as soon as it starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: dict[str, Reply | None] = {}
        self._stopped: set[str] = set()

    def queued(self, page: str) -> None:
        """The page asked for an answer, which may wait for another page's: a Stop from now on
        counts for it. An answer already being written keeps its place: an edit's mark comes
        beside its answering event, not before it, and may arrive after it started."""
        with self._lock:
            if self._replies.get(page) is not None:
                return
            self._replies[page] = None
            self._stopped.discard(page)

    def begin(self, page: str) -> None:
        """The answer starts being prepared (already `queued`, unless asked over the API)."""
        with self._lock:
            self._replies.setdefault(page, None)

    def started(self, page: str, reply: Reply) -> None:
        with self._lock:
            self._replies[page] = reply
            if page in self._stopped:
                reply.cancel()

    def stop(self, page: str) -> None:
        with self._lock:
            if page not in self._replies:
                return  # nothing being answered
            reply = self._replies[page]
            if reply is None:
                self._stopped.add(page)
            else:
                reply.cancel()

    def end(self, page: str) -> None:
        with self._lock:
            self._replies.pop(page, None)
            self._stopped.discard(page)


def page_of(request: gr.Request | None) -> str:
    return str(getattr(request, "session_hash", "") or "")


def streamed(
    services: Services,
    answering_now: Answering,
    page: str,
    turn: Callable[[], Iterator[tuple[Reply, str]]],
    asking: Shown,
    shown: Shown,
    typed: str | None,
    *,
    thumbs: bool = False,
) -> Iterator[tuple[Any, ...]]:
    """The events' outputs as `turn` answers: `asking` (the conversation with the question)
    and the answer growing after it; once done, the conversation as saved (with its `thumbs`
    drawn afresh, or left as they are). On an error, what was `shown` again (and the `typed`
    text back in the message box, if any) and the error."""
    answering_now.begin(page)
    yield answering(chatbot=asking, display=asking, message="", passage="", page_image=no_page())
    result = None
    try:
        for result, _piece in turn():
            answer = [*asking, {"role": "assistant", "content": result.text}]
            started = not result.text
            if started:
                answering_now.started(page, result)
            yield answering(
                chatbot=answer,
                display=answer,
                message="",
                conversation=result.conversation_id,
                sources_state=[s.to_dict() for s in result.sources],
                sources=source_radio(result.sources) if started else gr.skip(),
                status=services.models.describe_loaded() if started else gr.skip(),
            )
    except LocalLLMError as e:
        yield answering(
            chatbot=shown,
            display=shown,
            message=gr.skip() if typed is None else typed,
            status=services.models.describe_loaded(),
        )
        raise gr.Error(str(e)) from e
    finally:
        answering_now.end(page)
    if result is not None:
        final, saved_ids, ratings = display_messages(services, result.conversation_id)
        yield answering(
            # a plain value, as /chat answers over the API, where the thumbs can stay
            chatbot=gr.update(value=final, feedback_value=ratings) if thumbs else final,
            display=final,
            message="",
            conversation=result.conversation_id,
            message_ids=saved_ids,
            sources_state=[s.to_dict() for s in result.sources],
            sources=source_radio(result.sources),
            conversations=gr.update(
                choices=conversation_choices(services), value=result.conversation_id
            ),
        )


def last_question(shown: Shown) -> int | None:
    """The index of the last question shown."""
    return max((i for i, m in enumerate(shown) if m.get("role") == "user"), default=None)


def edited_text(value: Any) -> str:
    """An edited message's text, as the Chatbot's edit event gives it (text or content parts)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("text") or value.get("content") or "")
    if isinstance(value, list | tuple):
        return "".join(edited_text(part) for part in value)
    return ""


class ChatEvents:
    """The answering events of one Chat tab, sharing what its pages are answering."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.answering = Answering()

    def respond(
        self,
        text: str,
        conversation_id: str,
        shown: list[dict[str, str]],
        ids: list[int],
        model_name: str | None,
        collection_name: str | None,
        only_documents: list[str] | None,
        system_prompt: str,
        temp: float,
        nucleus: float,
        new_tokens: float,
        stop_lines: str,
        ctx: float | None,
        n_threads: float | None,
        n_gpu: float | None,
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        if not text or not text.strip():
            yield answering()
            return
        asked = chat_request(
            self.services.settings,
            model_name,
            collection_name,
            only_documents,
            system_prompt,
            temp,
            nucleus,
            new_tokens,
            stop_lines,
            ctx,
            n_threads,
            n_gpu,
        )

        def turn() -> Iterator[Any]:
            return self.services.chat.reply(text, asked, conversation_id=conversation_id or None)

        asking = [*shown, {"role": "user", "content": text}]
        yield from streamed(
            self.services, self.answering, page_of(request), turn, asking, shown, text
        )

    def regenerate(
        self,
        conversation_id: str,
        shown: list[dict[str, str]],
        model_name: str | None,
        collection_name: str | None,
        only_documents: list[str] | None,
        system_prompt: str,
        temp: float,
        nucleus: float,
        new_tokens: float,
        stop_lines: str,
        ctx: float | None,
        n_threads: float | None,
        n_gpu: float | None,
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        """The last question answered again, the new answer in place of the old (kept, hidden)."""
        asked = last_question(shown)
        if not conversation_id or asked is None:
            gr.Info("Ask something first: there is no answer to regenerate yet.")
            yield answering()
            return
        again = chat_request(
            self.services.settings,
            model_name,
            collection_name,
            only_documents,
            system_prompt,
            temp,
            nucleus,
            new_tokens,
            stop_lines,
            ctx,
            n_threads,
            n_gpu,
        )

        def turn() -> Iterator[Any]:
            return self.services.chat.regenerate(again, conversation_id=conversation_id)

        page = page_of(request)
        yield from streamed(
            self.services, self.answering, page, turn, shown[: asked + 1], shown, None, thumbs=True
        )

    def edit(
        self,
        conversation_id: str,
        shown: list[dict[str, str]],
        model_name: str | None,
        collection_name: str | None,
        only_documents: list[str] | None,
        system_prompt: str,
        temp: float,
        nucleus: float,
        new_tokens: float,
        stop_lines: str,
        ctx: float | None,
        n_threads: float | None,
        n_gpu: float | None,
        data: gr.EditData,
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        """The last question, edited in the Chatbot, answered anew (the old turn kept, hidden)."""
        index = data.index if isinstance(data.index, int) else data.index[0]
        text = edited_text(data.value).strip()
        if not conversation_id or index != last_question(shown) or not text:
            gr.Warning("Only the last question can be edited, and not to nothing.")
            yield answering(chatbot=shown, display=shown)
            return
        edited = chat_request(
            self.services.settings,
            model_name,
            collection_name,
            only_documents,
            system_prompt,
            temp,
            nucleus,
            new_tokens,
            stop_lines,
            ctx,
            n_threads,
            n_gpu,
        )

        def turn() -> Iterator[Any]:
            return self.services.chat.edit(text, edited, conversation_id=conversation_id)

        asking = [*shown[:index], {"role": "user", "content": text}]
        yield from streamed(
            self.services, self.answering, page_of(request), turn, asking, shown, None, thumbs=True
        )

    def queued(self, request: gr.Request) -> None:
        """Before an answering event waits in the queue (not queued itself): Stop can reach it."""
        self.answering.queued(page_of(request))

    def stop(self, request: gr.Request) -> None:
        """Stop: the answer this page is writing ends at its next token."""
        self.answering.stop(page_of(request))
