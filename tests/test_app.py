"""The app as a user starts it (`localllm serve`), driven over its own API by gradio_client."""

from __future__ import annotations

from typing import Any

from gradio_client import Client

from tests.conftest import RunningApp


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
    conversation, textbox, _status = updates[-1]
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
