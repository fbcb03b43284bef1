"""The OpenAI-compatible API, driven by the official `openai` client against the running app."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import httpx
import pytest
from gradio_client import Client, handle_file
from openai import OpenAI

from tests.conftest import RunningApp
from tests.corpus import corpus_file

COLLECTION = "faq-openai"


@pytest.fixture(scope="module")
def client(running_app: RunningApp) -> OpenAI:
    return OpenAI(base_url=running_app.url + "v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def faq(running_app: RunningApp) -> str:
    status, *_ = Client(running_app.url, verbose=False).predict(
        [handle_file(str(corpus_file("debian-faq.en.pdf")))],
        [],
        COLLECTION,
        False,
        api_name="/ingest",
    )
    assert "1 added" in status or "unchanged" in status, status
    return COLLECTION


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_models_and_a_plain_answer(client: OpenAI) -> None:
    names = [m.id for m in client.models.list()]
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in names
    reply = client.chat.completions.create(
        model=names[0],
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    assert reply.choices[0].message.content and reply.choices[0].message.content.strip()
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert getattr(reply, "sources", None) is None


def test_plain_answer_streams(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="bundled",
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=32,
        stream=True,
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3 and "".join(pieces).strip()


def test_grounded_answer_has_sources(client: OpenAI, faq: str) -> None:
    reply = client.chat.completions.create(
        model="bundled",
        messages=[{"role": "user", "content": "Where is Google Earth?"}],
        max_tokens=48,
        temperature=0,
        extra_body={"collection": faq},
    )
    sources = reply.model_extra["sources"]  # type: ignore[index]
    assert sources and {"n", "file", "page", "text", "score", "spans"} <= sources[0].keys()
    checked = reply.choices[0].message.model_extra or {}
    assert isinstance(checked["attribution"], list) and checked["outcome"] in ("answered", "quoted")
    assert all(s["spans"] for s in sources if s["cited"]) and any(s["cited"] for s in sources)
    assert any(s["file"] == "debian-faq.en.pdf" and s["page"] == 28 for s in sources)
    assert reply.choices[0].message.content

    stream = client.chat.completions.create(
        model="bundled",
        messages=[{"role": "user", "content": "Where is Google Earth?"}],
        max_tokens=24,
        stream=True,
        extra_body={"collection": faq},
    )
    chunks = list(stream)
    assert any(s["page"] == 28 for s in chunks[0].model_extra["sources"])  # type: ignore[index]
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1].model_extra or {}
    assert isinstance(last["attribution"], list) and last["answer"].strip()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()

    declined = client.chat.completions.create(
        model="bundled",
        messages=[{"role": "user", "content": "What is the capital of Australia?"}],
        extra_body={"collection": faq},
    )
    assert "can't find that in your documents" in (declined.choices[0].message.content or "")
    assert declined.model_extra["sources"] == []  # type: ignore[index]


def test_embeddings(client: OpenAI) -> None:
    got = client.embeddings.create(model="any", input=["a heron", "a pond"])
    assert [e.index for e in got.data] == [0, 1]
    assert len(got.data[0].embedding) == 384 and got.data[0].embedding != got.data[1].embedding


def test_bad_requests_get_400_with_the_reason(running_app: RunningApp, client: OpenAI) -> None:
    url = running_app.url + "v1/chat/completions"
    status, body = post(url, b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = post(url, json.dumps({"messages": []}).encode())
    assert status == 400 and "messages" in body["error"]["message"]
    status, body = post(
        url, json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode()
    )
    assert status == 400 and "role" in body["error"]["message"]
    status, body = post(
        url,
        json.dumps(
            {"messages": [{"role": "user", "content": "hi"}], "collection": "nope"}
        ).encode(),
    )
    assert status == 400 and "no collection named 'nope'" in body["error"]["message"]
    status, body = post(
        url,
        json.dumps(
            {"model": "missing.gguf", "messages": [{"role": "user", "content": "hi"}]}
        ).encode(),
    )
    assert status == 404 and "missing.gguf" in body["error"]["message"]
    status, body = post(running_app.url + "v1/embeddings", json.dumps({"input": ""}).encode())
    assert status == 400
    status, body = post(url, b'{"messages": [{"role": "user", "content": "\\ud800"}]}')
    assert status == 400 and "lone surrogate" in body["error"]["message"]
    status, body = post(url, b"\xff")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = post(running_app.url + "v1/completions", b'{"prompt": "hi"}')
    assert status == 404 and "/v1/chat/completions" in body["error"]["message"]
    wrong = httpx.get(url, timeout=30)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["message"].startswith("GET is not allowed")


def test_twenty_concurrent_requests_are_all_answered(running_app: RunningApp) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # Those beyond the queue are refused with 503 and Retry-After, which the client honours.
    client = OpenAI(base_url=running_app.url + "v1", api_key="unused", max_retries=8, timeout=300)

    def ask(i: int) -> str:
        reply = client.chat.completions.create(
            model="bundled",
            messages=[{"role": "user", "content": f"Say the number {i}."}],
            max_tokens=8,
        )
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert len(answers) == 20 and all(a.strip() for a in answers)


def test_openai_details_clients_rely_on(running_app: RunningApp, client: OpenAI) -> None:
    ask = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
    cut = client.chat.completions.create(model="bundled", messages=ask, max_tokens=4)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and 0 < cut.usage.completion_tokens <= 4
    done = client.chat.completions.create(
        model="bundled", messages=[{"role": "user", "content": "Say hi."}], max_tokens=200
    )
    assert done.choices[0].finish_reason == "stop"

    chunks = list(
        client.chat.completions.create(
            model="bundled",
            messages=ask,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert 0 < chunks[-1].usage.completion_tokens <= 6 and chunks[-1].usage.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])

    # No model named: the one the app has loaded answers.
    status, body = post(
        running_app.url + "v1/chat/completions",
        json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}).encode(),
    )
    assert status == 200, body
    assert body["model"] == cut.model and body["choices"][0]["message"]["content"]


def test_the_page_and_models_answer_while_five_api_chats_generate(
    running_app: RunningApp, client: OpenAI
) -> None:
    ask = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    streaming = threading.Event()
    finished: list[float] = []

    def chat(i: int) -> None:
        if i == 0:  # streams, to say when generation has begun
            for chunk in client.chat.completions.create(
                model="bundled", messages=ask, max_tokens=200, seed=i, stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    streaming.set()
        else:
            client.chat.completions.create(model="bundled", messages=ask, max_tokens=200, seed=i)
        finished.append(time.monotonic())

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    try:
        assert streaming.wait(120), "no chat began to generate"
        waits: list[float] = []
        for _ in range(3):
            for path in ("", "v1/models"):
                t0 = time.monotonic()
                with urllib.request.urlopen(running_app.url + path, timeout=30) as r:
                    assert r.status == 200
                    r.read()
                waits.append(time.monotonic() - t0)
        measured = time.monotonic()
    finally:
        for t in threads:
            t.join(300)
    assert len(finished) == 5, "every chat was answered"
    assert max(finished) > measured, "the chats were still generating"
    assert max(waits) < 1.0, f"the page and /v1/models waited {max(waits):.2f} s on the model"


def _stream_until_streaming(url: str, started: threading.Event, leave: threading.Event) -> None:
    body = {"messages": [{"role": "user", "content": "Write a long story about a dog."}]}
    body |= {"max_tokens": 400, "stream": True}
    with (
        httpx.Client(timeout=120) as http,
        http.stream("POST", url + "v1/chat/completions", json=body) as response,
    ):
        for line in response.iter_lines():
            if '"content"' in line:
                started.set()
                if leave.wait(0):
                    return  # the client goes away mid-answer


def test_a_chat_after_a_stream_whose_client_left_is_answered(running_app: RunningApp) -> None:
    started, leave = threading.Event(), threading.Event()
    leave.set()
    gone = threading.Thread(target=_stream_until_streaming, args=(running_app.url, started, leave))
    gone.start()
    assert started.wait(120), "the stream never began"
    gone.join(30)
    # Before, the abandoned stream held the model and this request hung (over 590 s seen).
    reply = httpx.post(
        running_app.url + "v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]


def test_requests_beyond_the_queue_are_refused_with_retry_after(running_app: RunningApp) -> None:
    from concurrent.futures import ThreadPoolExecutor

    started, leave = threading.Event(), threading.Event()
    long = threading.Thread(target=_stream_until_streaming, args=(running_app.url, started, leave))
    long.start()
    assert started.wait(120), "the stream never began"

    def ask(i: int) -> httpx.Response:
        body = {"messages": [{"role": "user", "content": f"Say {i}."}], "max_tokens": 4}
        return httpx.post(running_app.url + "v1/chat/completions", json=body, timeout=300)

    try:
        with ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(ask, i) for i in range(20)]
            time.sleep(2)
            leave.set()
            replies = [f.result() for f in futures]
    finally:
        leave.set()
        long.join(120)
    refused = [r for r in replies if r.status_code == 503]
    assert refused, "with one answer streaming and 20 more asked, some go past the queue"
    assert all(r.status_code in (200, 503) for r in replies), [r.status_code for r in replies]
    for r in refused:
        assert int(r.headers["retry-after"]) > 0
        assert "retry" in r.json()["error"]["message"]
    assert len(replies) - len(refused) >= 8, "the queue's places were answered"


def test_a_megabyte_message_is_a_prompt_clear_400(running_app: RunningApp) -> None:
    huge = {"messages": [{"role": "user", "content": "word " * 200_000}]}
    for stream in (False, True):
        reply = httpx.post(
            running_app.url + "v1/chat/completions", json=huge | {"stream": stream}, timeout=30
        )
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["code"] == "context_length_exceeded"
        assert "far more than this model's context window" in reply.json()["error"]["message"]
