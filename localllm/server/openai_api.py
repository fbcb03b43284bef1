"""An OpenAI-compatible HTTP API on the same core: /v1/models, /v1/chat/completions, /v1/embeddings.

A chat request may name a collection (a top-level "collection" field) for a grounded answer; its
sources come back in a top-level "sources" field (in the first chunk when streaming). Every handler
is a plain function, which FastAPI runs in its thread pool: loading, searching and generating never
hold up the server's event loop, so the page and other requests answer while the model works.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, Field
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from localllm.chat.service import ChatAnswer, ChatMessage, ChatRequest
from localllm.errors import LocalLLMError, ModelBusyError, ModelNotFoundError, PromptTooLongError
from localllm.llm.catalog import chat_models
from localllm.llm.manager import params_from_settings
from localllm.server.auth import AuthStore
from localllm.services import Services

RETRY_AFTER = "5"  # seconds: about one short answer on a small model
SOURCE_FIELDS = ("n", "file", "page", "pages", "text", "score", "cited", "spans")


def _unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("is not valid Unicode text (it holds a lone surrogate)") from e
    return text


Text = Annotated[str, AfterValidator(_unicode)]


class ChatMessageBody(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Text


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    model: str | None = None  # omitted: the model the app has loaded (else the default)
    messages: list[ChatMessageBody] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    collection: str | None = None
    documents: list[str] | None = None


class EmbeddingBody(BaseModel):
    input: Text | list[Text]
    model: str | None = None


def error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    *,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"message": message, "type": kind}
    if code:
        body["code"] = code
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def busy(message: str) -> JSONResponse:
    return error(
        503, f"{message}: retry shortly", "server_busy", headers={"Retry-After": RETRY_AFTER}
    )


def refusal(e: Exception, *, during_generation: bool = False) -> JSONResponse:
    """The status for an answer that could not be made: the request's fault (400), the model
    busy (503), or a failure while generating (500)."""
    if isinstance(e, ModelBusyError):
        return busy(str(e))
    if isinstance(e, PromptTooLongError):
        return error(400, str(e), code="context_length_exceeded")
    if during_generation:
        return error(500, str(e), "server_error")
    return error(400, str(e))


class Admission:
    """How many chats the API takes at once: the one the model answers and those queued for it;
    beyond that a request is refused at once instead of piling up."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = threading.BoundedSemaphore(size)

    def enter(self) -> Callable[[], None] | None:
        """A slot, as the function that gives it back (once, however often called); None: full."""
        if not self._slots.acquire(blocking=False):
            return None
        left = threading.Event()

        def leave() -> None:
            if not left.is_set():
                left.set()
                self._slots.release()

        return leave


async def until_done(events: Iterator[str], done: Callable[[], None]) -> AsyncIterator[str]:
    """Stream `events` from the thread pool; `done` runs when the stream ends or its client goes."""
    try:
        async for event in iterate_in_threadpool(events):
            yield event
    finally:
        done()


def validation_message(errors: list[dict[str, Any]]) -> str:
    if any(e.get("type") == "json_invalid" for e in errors):
        return "the request body is not valid JSON"
    reasons = []
    for e in errors:
        where = [str(p) for p in e.get("loc", ()) if p != "body"]
        reasons.append(f"{'.'.join(where) or 'body'}: {e.get('msg', 'invalid')}")
    return "bad request: " + "; ".join(reasons)


class OpenAIRoute(APIRoute):
    """Bad bodies answered as OpenAI does (400 with an error object), on this router only."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as e:
                return error(400, validation_message(list(e.errors())))
            except StarletteHTTPException as e:  # a key refused, a body that is not even text
                return http_error(e)

        return route


def http_error(e: StarletteHTTPException) -> JSONResponse:
    if isinstance(e.detail, dict):
        body = e.detail
    elif e.status_code == 400:
        body = {
            "message": "the request body is not valid JSON text",
            "type": "invalid_request_error",
        }
    else:
        body = {"message": str(e.detail), "type": "invalid_request_error"}
    return JSONResponse({"error": body}, status_code=e.status_code, headers=e.headers)


def build_router(services: Services) -> APIRouter:
    settings = services.settings
    access = AuthStore(settings.auth_path)

    def require_key(request: Request) -> None:
        if not access.enabled:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not access.check_key(key.strip()):
            raise HTTPException(
                401,
                detail={"message": "invalid or missing API key", "type": "authentication_error"},
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], route_class=OpenAIRoute)

    @router.get("/models")
    def models() -> dict[str, Any]:
        found = chat_models(settings)
        return {
            "object": "list",
            "data": [
                {"id": m.name, "object": "model", "created": 0, "owned_by": "local"} for m in found
            ],
        }

    @router.post("/embeddings", response_model=None)
    def embeddings(body: EmbeddingBody) -> Any:
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or any(not t.strip() for t in texts):
            return error(400, "input must be a non-empty string or a list of non-empty strings")
        vectors = services.embedder.embed(texts)
        tokens = sum(services.embedder.count_tokens(t) for t in texts)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                for i, v in enumerate(vectors)
            ],
            "model": body.model or "all-MiniLM-L6-v2",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    admission = Admission(1 + settings.api_queue)

    @router.post("/chat/completions", response_model=None)
    def chat_completions(body: ChatCompletionBody) -> Any:
        stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
        params = params_from_settings(
            settings,
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_tokens,
            stop=tuple(stop),
            seed=body.seed,
        )
        request = ChatRequest(
            [ChatMessage(m.role, m.content) for m in body.messages],
            model=body.model,
            params=params,
            collection=body.collection,
            documents=body.documents,
        )
        leave = admission.enter()
        if leave is None:
            return busy(f"{admission.size} chats are already answering or waiting for the model")
        handed_on = False
        try:
            try:
                answer = services.chat.answer(request)
            except ModelNotFoundError as e:
                return error(404, str(e), "not_found_error")
            except (ValueError, LocalLLMError) as e:
                return refusal(e)
            reply = Completion(answer, grounded=bool(body.collection))
            try:
                reply.start()  # waits for the model: a refusal still gets its status code
            except LocalLLMError as e:
                return refusal(e, during_generation=True)
            if not body.stream:
                try:
                    return reply.whole()
                except LocalLLMError as e:
                    return refusal(e, during_generation=True)
            usage = bool(body.stream_options and body.stream_options.include_usage)
            handed_on = True
            return StreamingResponse(
                until_done(reply.events(usage), lambda: (answer.cancel(), leave())),
                media_type="text/event-stream",
            )
        finally:
            if not handed_on:
                leave()

    @router.api_route(
        "/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
    )
    def unknown(rest: str, request: Request) -> JSONResponse:
        path = f"/v1/{rest}"
        allowed = sorted(
            m
            for r in router.routes
            if isinstance(r, APIRoute) and r.path == path
            for m in r.methods
        )
        if allowed:
            return error(
                405,
                f"{request.method} is not allowed on {path}: use {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
            )
        known = ", ".join(
            sorted(r.path for r in router.routes if isinstance(r, APIRoute) and r.include_in_schema)
        )
        return error(404, f"no endpoint {path} (this server has {known})", "not_found_error")

    return router


class Completion:
    """One answer in OpenAI's shapes: a chat.completion, or chat.completion.chunk events."""

    def __init__(self, answer: ChatAnswer, *, grounded: bool) -> None:
        self.answer = answer
        self.grounded = grounded
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self._pieces: Iterator[str] = iter(())

    def sources(self) -> list[dict[str, Any]]:
        return [{k: s.to_dict()[k] for k in SOURCE_FIELDS} for s in self.answer.sources]

    def usage(self) -> dict[str, int]:
        stats = self.answer.stats
        return {
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        }

    def checked(self) -> dict[str, Any]:
        """What attribution found, for a grounded answer: each sentence's source and support, and
        the answer shown when it is not the model's words (a quote, or a decline)."""
        grounded = self.answer.grounded
        if grounded is None:
            return {}
        extra: dict[str, Any] = {
            "attribution": grounded.attribution.to_list(),
            "outcome": grounded.outcome,
        }
        if grounded.model_text != grounded.text:
            extra["model_answer"] = grounded.model_text
        return extra

    def start(self) -> None:
        """Begin the answer: wait for the model and its first piece, raising what stops it."""
        pieces = self.answer.stream()
        first = next(pieces, None)
        self._pieces = itertools.chain([] if first is None else [first], pieces)

    def whole(self) -> dict[str, Any]:
        for _ in self._pieces:
            pass
        text = self.answer.text
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.answer.model.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, **self.checked()},
                    "finish_reason": self.answer.finish_reason,
                }
            ],
            "usage": self.usage(),
        }
        if self.grounded:
            body["sources"] = self.sources()
        return body

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.answer.model.name,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def _delta(self, delta: dict[str, str], finish: str | None = None, **extra: Any) -> str:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish}], **extra)

    def events(self, include_usage: bool) -> Iterator[str]:
        """Server-sent events; with include_usage, a last chunk with no choices carries `usage`."""
        usage: dict[str, Any] = {"usage": None} if include_usage else {}
        first = {"sources": self.sources()} if self.grounded and self.answer.sources else {}
        yield self._delta({"role": "assistant"}, **first, **usage)
        try:
            for piece in self._pieces:
                yield self._delta({"content": piece}, **usage)
        except LocalLLMError as e:
            yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
            return
        last = (
            {**self.checked(), "answer": self.answer.text, "sources": self.sources()}
            if self.grounded
            else {}
        )
        yield self._delta({}, self.answer.finish_reason, **usage, **last)
        if include_usage:
            yield self._chunk([], usage=self.usage())
        yield "data: [DONE]\n\n"
