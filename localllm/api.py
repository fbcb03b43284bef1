"""An OpenAI-compatible HTTP API on the same core: /v1/models, /v1/chat/completions, /v1/embeddings.

A chat request may name a collection (a top-level "collection" field) for a grounded answer; its
sources come back in a top-level "sources" field (in the first chunk when streaming).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from localllm.auth import AuthStore
from localllm.errors import LocalLLMError, ModelNotFoundError
from localllm.llm.base import Message
from localllm.llm.catalog import chat_models
from localllm.llm.manager import params_from_settings
from localllm.rag.prompt import Turn
from localllm.services import Services


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    collection: str | None = None
    documents: list[str] | None = None


class EmbeddingRequest(BaseModel):
    input: str | list[str]
    model: str | None = None


def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


async def _parse(request: Request, schema: type[BaseModel]) -> BaseModel | JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return error(400, "the request body is not valid JSON")
    try:
        return schema.model_validate(body)
    except ValidationError as e:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()
        )
        return error(400, f"bad request: {reasons}")


def _history(messages: list[ChatMessage]) -> tuple[list[Turn], str]:
    """Earlier user/assistant pairs as turns, and the last user message as the question."""
    if messages[-1].role != "user":
        raise ValueError("the last message must be the user's question")
    turns: list[Turn] = []
    question: str | None = None
    for m in messages[:-1]:
        if m.role == "user":
            question = m.content
        elif m.role == "assistant" and question is not None:
            turns.append(Turn(question, m.content))
            question = None
    return turns, messages[-1].content


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

    router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

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
    async def embeddings(request: Request) -> Any:
        parsed = await _parse(request, EmbeddingRequest)
        if isinstance(parsed, JSONResponse):
            return parsed
        assert isinstance(parsed, EmbeddingRequest)
        texts = [parsed.input] if isinstance(parsed.input, str) else parsed.input
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
            "model": parsed.model or "all-MiniLM-L6-v2",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        parsed = await _parse(request, ChatRequest)
        if isinstance(parsed, JSONResponse):
            return parsed
        assert isinstance(parsed, ChatRequest)
        stop = [parsed.stop] if isinstance(parsed.stop, str) else (parsed.stop or [])
        params = params_from_settings(
            settings,
            temperature=parsed.temperature,
            top_p=parsed.top_p,
            max_tokens=parsed.max_tokens,
            stop=tuple(stop),
            seed=parsed.seed,
        )
        try:
            model = services.models.get(parsed.model)
            sources: list[dict[str, Any]] = []
            if parsed.collection:
                turns, question = _history(parsed.messages)
                answer = services.grounded().prepare(
                    model,
                    question,
                    parsed.collection,
                    params,
                    history=turns,
                    documents=parsed.documents,
                )
                pieces: Iterator[str] = answer.stream(model, params)
                sources = [
                    {k: s.to_dict()[k] for k in ("n", "file", "page", "pages", "text", "score")}
                    for s in answer.sources
                ]
            else:
                messages: list[Message] = [
                    {"role": m.role, "content": m.content} for m in parsed.messages
                ]
                pieces = model.stream_chat(messages, params)
        except ModelNotFoundError as e:
            return error(404, str(e), "not_found_error")
        except ValueError as e:
            return error(400, str(e))
        except LocalLLMError as e:
            return error(400, str(e))
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if parsed.stream:
            return StreamingResponse(
                _sse(pieces, ident, created, model.name, sources), media_type="text/event-stream"
            )
        try:
            text = "".join(pieces)
        except LocalLLMError as e:
            return error(500, str(e), "server_error")
        stats = getattr(model, "last_stats", None)
        prompt_tokens = int(getattr(stats, "prompt_tokens", 0))
        completion_tokens = int(getattr(stats, "completion_tokens", 0))
        body: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        if parsed.collection:
            body["sources"] = sources
        return body

    return router


def _sse(
    pieces: Iterator[str], ident: str, created: int, model: str, sources: list[dict[str, Any]]
) -> Iterator[str]:
    def chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant"}, **({"sources": sources} if sources else {}))
    try:
        for piece in pieces:
            yield chunk({"content": piece})
    except LocalLLMError as e:
        yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
        return
    yield chunk({}, "stop")
    yield "data: [DONE]\n\n"
