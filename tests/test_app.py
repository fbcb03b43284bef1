"""The app as a user starts it (`localllm serve`), driven over its own API by gradio_client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.conftest import RunningApp
from tests.corpus import corpus_file


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def test_chat_round_trip_streams(running_app: RunningApp) -> None:
    client = Client(running_app.url, verbose=False)
    job = client.submit("What is the capital of France?", api_name="/chat")
    updates = list(job)
    assert len(updates) > 3, "the answer should stream in several updates"
    conversation, textbox = updates[-1][0], updates[-1][1]
    assert textbox == ""
    assert [m["role"] for m in conversation] == ["user", "assistant"]
    assert _text(conversation[0]) == "What is the capital of France?"
    answer = _text(conversation[1])
    assert answer.strip()
    partial = [_text(u[0][-1]) for u in updates if len(u[0]) == 2]
    assert len(set(partial)) > 2 and partial[-1] == answer, (
        "partial answers grow until the full one"
    )


def test_a_model_broken_on_disk_is_an_error_not_a_crash(running_app: RunningApp) -> None:
    client = Client(running_app.url, verbose=False)
    doomed = running_app.models_dir / "doomed.gguf"
    real = doomed.resolve().read_bytes()
    doomed.unlink()
    doomed.write_bytes(real[: len(real) // 3])  # the file the picker offers is cut short on disk
    try:
        client.predict("hi", "doomed.gguf", api_name="/chat")
    except Exception as e:  # gradio_client raises AppError carrying the gr.Error message
        assert "doomed.gguf can't be loaded: truncated" in str(e)
    else:
        raise AssertionError("expected an error for a truncated model")
    doomed.unlink()
    try:
        client.predict("hi", "doomed.gguf", api_name="/chat")
    except Exception as e:
        assert "no model named 'doomed.gguf'" in str(e)
    else:
        raise AssertionError("expected an error for a deleted model")
    # The app keeps serving.
    updates = list(client.submit("Say yes.", api_name="/chat"))
    assert _text(updates[-1][0][-1]).strip()


def _ingest_faq(client: Client, collection: str) -> None:
    faq = corpus_file("debian-faq.en.pdf")
    status, *_ = client.predict([handle_file(str(faq))], [], collection, False, api_name="/ingest")
    assert "1 added" in status or "unchanged" in status, status


def test_grounded_answer_cites_the_page_over_the_api(running_app: RunningApp) -> None:
    client = Client(running_app.url, verbose=False)
    _ingest_faq(client, "faq-api")
    chat, _box, sources, *_ = client.predict(
        "Where is Google Earth?", collection_name="faq-api", temp=0.0, api_name="/chat"
    )
    labels = [label for label, _value in sources["choices"]]
    assert labels, "a grounded answer lists its sources"
    assert any("debian-faq.en.pdf · p. 28" in label for label in labels), labels
    answer = _text(chat[-1])
    assert "Sources:" in answer and "p. 28" in answer

    # Outside the documents: declined, with no sources, in grounded mode.
    chat, _box, sources, *_ = client.predict(
        "What is the capital of Australia?", collection_name="faq-api", api_name="/chat"
    )
    assert "can't find that in your documents" in _text(chat[-1])
    assert sources["choices"] == []

    # Limited to documents of the collection: an unknown one is a clear error.
    try:
        client.predict(
            "Where is Google Earth?",
            collection_name="faq-api",
            only_documents=["nope.pdf"],
            api_name="/chat",
        )
    except Exception as e:
        assert "no document named nope.pdf in collection 'faq-api'" in str(e)
    else:
        raise AssertionError("expected an error for an unknown document")
    chat, _box, sources, *_ = client.predict(
        "Where is Google Earth?",
        collection_name="faq-api",
        only_documents=["debian-faq.en.pdf"],
        api_name="/chat",
    )
    assert any("p. 28" in label for label, _value in sources["choices"])

    # The conversation was saved: both questions are in the saved list's newest entry.
    saved = client.predict("Where is Google Earth?", collection_name="", api_name="/chat")[4]
    assert saved["choices"], "the conversation list holds the saved chat"


def _upload(url: str, filename: str, data: bytes) -> tuple[int, str]:
    """A raw multipart upload to Gradio, with whatever file name a client claims."""
    boundary = "localllm-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"\r\n'
            "Content-Type: text/markdown\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url + "gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_upload_names_cannot_escape_and_size_is_capped(running_app: RunningApp) -> None:
    data_dir = running_app.models_dir.parent
    escape = data_dir.parent / "escaped-upload.md"
    status, body = _upload(
        running_app.url, "../../../escaped-upload.md", b"# Notes\n\nThe kestrel hunts at dusk.\n"
    )
    assert status == 200, body
    uploaded = json.loads(body)[0]
    client = Client(running_app.url, verbose=False)
    status_text, *_ = client.predict(
        [handle_file(uploaded)], [], "uploads", False, api_name="/ingest"
    )
    assert "1 added" in status_text, status_text
    assert not escape.exists()
    kept = [p for p in (data_dir / "docs_store" / "uploads").rglob("*") if p.is_file()]
    assert kept and all(p.resolve().is_relative_to(data_dir.resolve()) for p in kept)
    assert not any(".." in p.name for p in kept)

    status, body = _upload(running_app.url, "big.md", b"x" * (21 * 2**20))
    assert status == 413, (status, body[:200])


def test_a_collection_is_created_from_the_documents_tab(running_app: RunningApp) -> None:
    client = Client(running_app.url, verbose=False)
    status, choices, *_ = client.predict("Field notes 2026", api_name="/create_collection")
    assert "Field notes 2026" in status and "ready" in status
    assert "Field notes 2026" in json.dumps(choices)
    with pytest.raises(AppError, match="not a usable collection name"):
        client.predict("   ", api_name="/create_collection")
    again, choices, *_ = client.predict("Field notes 2026", api_name="/create_collection")
    names = [value for _, value in choices["choices"]]
    assert "ready" in again and names.count("Field notes 2026") == 1  # made once, not twice
