"""Generation on an OpenAI-compatible server (llm_url): llama.cpp's servers, vLLM, ...

The server applies the model's chat template, so token counts here are close, not exact: the
conversation is rendered as ChatML and counted with the server's tokenizer where it exposes one
(llama-cpp-python's POST /extras/tokenize/count), else estimated at CHARS_PER_TOKEN characters a token.
Spoken over httpx (already installed with gradio, chromadb and the Hub client), not the openai
package, which is only a development dependency.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from localllm.errors import RemoteModelError
from localllm.llm.base import GenerationParams, GenerationStats, Message
from localllm.llm.context import answer_budget, fit_to_context, refuse_oversized

CHARS_PER_TOKEN = 3.5  # the estimate where a server cannot count: English text with a BPE tokenizer
DEFAULT_CONTEXT = 4096
_CONNECT_TIMEOUT = 10.0
_READ_TIMEOUT = 300.0  # between two pieces of an answer: a long prompt on a slow server
_COUNT_CACHE = 512


def _chatml(messages: Sequence[Message]) -> str:
    """The conversation as ChatML text, which is what most templates cost, give or take a token."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


class RemoteChatModel:
    """A model served by an OpenAI-compatible server at `url` (ending in /v1)."""

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        context_size: int = 0,
        timeout: float = _READ_TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        self._api_key = api_key or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: httpx.Client | None = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=_CONNECT_TIMEOUT),
            # A server on this machine is not reached through the user's HTTP proxy; others may be.
            trust_env=httpx.URL(self.url).host not in ("localhost", "127.0.0.1", "::1"),
        )
        self.last_stats = GenerationStats()
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._can_count: bool | None = None  # unknown until the first count
        try:
            models = self._models()
        except RemoteModelError:
            self.close()
            raise
        ids = [str(m.get("id")) for m in models if m.get("id")]
        if not ids:
            self.close()
            raise RemoteModelError(f"the LLM server at {self.url} lists no models")
        chosen = name if name in ids else ids[0]
        self.name = chosen
        meta = next(m for m in models if m.get("id") == chosen)
        served, trained = _context_from(meta)
        configured = context_size or DEFAULT_CONTEXT
        self._context = served or (min(trained, configured) if trained else configured)

    # the protocol

    @property
    def context_length(self) -> int:
        return self._context

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        cached = self._counts.get(text)
        if cached is not None:
            self._counts.move_to_end(text)
            return cached
        count = self._server_count(text)
        if count is None:
            count = math.ceil(len(text) / CHARS_PER_TOKEN)
        self._counts[text] = count
        if len(self._counts) > _COUNT_CACHE:
            self._counts.popitem(last=False)
        return count

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the conversation takes, counted as ChatML: the server's own template may differ."""
        return self.count_tokens(_chatml(messages))

    def answer_budget(self, params: GenerationParams) -> int:
        return answer_budget(self.context_length, params)

    def stream_chat(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        stats: GenerationStats | None = None,
    ) -> Iterator[str]:
        refuse_oversized(messages, self.context_length)
        budget = self.answer_budget(params)
        kept = list(messages)
        tokens = self.prompt_tokens(kept)
        if tokens > budget:
            kept = fit_to_context(messages, self.prompt_tokens, budget)
            tokens = self.prompt_tokens(kept)
        body: dict[str, Any] = {
            "model": self.name,
            "messages": [{"role": m["role"], "content": m["content"]} for m in kept],
            "stream": True,
            "max_tokens": max(1, min(params.max_tokens, self.context_length - tokens)),
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.repeat_penalty != 1.0:
            # Not an OpenAI field: llama.cpp's servers honour it, vLLM ignores it (with a warning).
            body["repeat_penalty"] = params.repeat_penalty
        stats = stats if stats is not None else GenerationStats()
        stats.prompt_tokens, stats.trimmed_messages = tokens, len(messages) - len(kept)
        started = time.perf_counter()
        try:
            for text in self._stream(body, stats):
                if not stats.completion_tokens:
                    stats.seconds_to_first_token = time.perf_counter() - started
                stats.completion_tokens += 1
                yield text
        finally:
            stats.seconds_total = time.perf_counter() - started
            self.last_stats = stats

    def choice_logits(self, messages: Sequence[Message], options: Sequence[str]) -> list[float]:
        """Each option's log-probability as the first token of the answer (the reranker's judge):
        differences between them are the differences of the logits. -100 for an option not among
        the server's top 20."""
        body = {
            "model": self.name,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": 20,
        }
        reply = self._request("POST", f"{self.url}/chat/completions", json=body).json()
        try:
            top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError) as e:
            raise RemoteModelError(
                f"the LLM server at {self.url} returns no log-probabilities, which the reranker "
                "needs: set rerank to off"
            ) from e
        seen: dict[str, float] = {}
        for entry in top:
            token = str(entry.get("token", "")).strip()
            seen.setdefault(token, float(entry.get("logprob", -100.0)))
        return [seen.get(option.strip(), -100.0) for option in options]

    def describe(self) -> str:
        return f"remote: {self.url} · model {self.name} · context: {self.context_length} tokens"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # the wire

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise RemoteModelError(f"the connection to the LLM server at {self.url} was closed")
        return self._client

    def _hide_key(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _fail(self, reason: str, error: Exception | None = None) -> RemoteModelError:
        detail = f": {self._hide_key(str(error))}" if error is not None and str(error) else ""
        return RemoteModelError(self._hide_key(f"the LLM server at {self.url} {reason}{detail}"))

    def _status_error(self, response: httpx.Response) -> RemoteModelError:
        code = response.status_code
        if code in (401, 403):
            what = "refused the API key" if self._api_key else "wants an API key"
            return self._fail(f"{what} (HTTP {code}): check LOCALLLM_LLM_API_KEY")
        try:
            detail = response.json()
            detail = detail.get("error", detail.get("detail", detail))
            if isinstance(detail, dict):
                detail = detail.get("message", detail)
        except (ValueError, AttributeError):
            detail = response.text
        text = str(detail).strip()[:500]
        hint = ""
        if code == 404 and not self.url.endswith("/v1"):
            hint = " (does the URL need to end in /v1?)"
        return self._fail(f"answered HTTP {code}{hint}" + (f": {text}" if text else ""))

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as e:
            raise self._fail("did not answer in time", e) from e
        except httpx.HTTPError as e:
            raise self._fail("cannot be reached; is it running?", e) from e
        if response.status_code >= 400:
            raise self._status_error(response)
        return response

    def _models(self) -> list[dict[str, Any]]:
        response = self._request("GET", f"{self.url}/models")
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError) as e:
            raise self._fail(
                "did not answer GET /models like an OpenAI-compatible server", e
            ) from e
        return [m for m in data if isinstance(m, dict)]

    def _server_count(self, text: str) -> int | None:
        """llama-cpp-python's token count, or None where the server has no such endpoint."""
        if self._can_count is False:
            return None
        root = self.url.removesuffix("/v1")
        try:
            response = self.client.post(
                f"{root}/extras/tokenize/count", json={"input": text, "model": self.name}
            )
        except httpx.HTTPError as e:
            raise self._fail("cannot be reached; is it running?", e) from e
        if response.status_code in (401, 403):
            raise self._status_error(response)
        try:
            count = int(response.json()["count"]) if response.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            count = None
        self._can_count = count is not None
        return count

    def _stream(self, body: dict[str, Any], stats: GenerationStats) -> Iterator[str]:
        finished = False
        try:
            with self.client.stream("POST", f"{self.url}/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._status_error(response)
                for line in response.iter_lines():
                    if stats.cancel.is_set():
                        finished = True
                        break
                    if not line.startswith("data:"):
                        continue  # blank separators, ": ping" comments, event names
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        finished = True
                        break
                    try:
                        chunk = json.loads(payload)
                    except ValueError as e:
                        raise self._fail("sent a piece of answer that is not JSON", e) from e
                    if chunk.get("error"):
                        error = chunk["error"]
                        message = error.get("message", error) if isinstance(error, dict) else error
                        raise self._fail(f"failed mid-answer: {message}")
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield text
                        if choice.get("finish_reason"):
                            finished = True
                            if choice["finish_reason"] == "length":
                                stats.finish_reason = "length"
        except httpx.TimeoutException as e:
            raise self._fail("stopped answering (timed out)", e) from e
        except httpx.ConnectError as e:
            raise self._fail("cannot be reached; is it running?", e) from e
        except httpx.HTTPError as e:
            raise self._fail("broke off the answer", e) from e
        if not finished:
            raise self._fail("broke off the answer: the stream ended before it was finished")


def _context_from(meta: dict[str, Any]) -> tuple[int, int]:
    """(the context window a /models entry says is served, the one the model was trained for),
    0 where unsaid: vLLM says max_model_len; llama.cpp's llama-server only n_ctx_train, an upper
    bound; llama-cpp-python says neither."""
    inner = meta.get("meta") if isinstance(meta.get("meta"), dict) else {}

    def first(*values: object) -> int:
        return next((v for v in values if isinstance(v, int) and v > 0), 0)

    return first(meta.get("max_model_len"), inner.get("n_ctx")), first(inner.get("n_ctx_train"))
