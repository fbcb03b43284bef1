"""Access control: no login on localhost by default; when users and keys exist, the UI asks for a
login and the API for a bearer key; secrets are stored hashed; an open non-local bind is warned of."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client
from openai import AuthenticationError, OpenAI

from localllm.server.auth import AuthStore, check_password, hash_password
from tests.conftest import serving

PASSWORD = "correct horse battery"


def test_secrets_are_stored_hashed(tmp_path: Path) -> None:
    store = AuthStore(tmp_path / "auth.json")
    assert not store.enabled
    store.add_user("ana", PASSWORD)
    key = store.add_key("scripts")
    text = (tmp_path / "auth.json").read_text()
    assert PASSWORD not in text and key not in text
    assert (tmp_path / "auth.json").stat().st_mode & 0o077 == 0, "readable by its owner only"
    assert store.enabled and store.check_user("ana", PASSWORD)
    assert not store.check_user("ana", "wrong password") and not store.check_user("bob", PASSWORD)
    assert store.check_key(key) and not store.check_key(key + "x")
    assert check_password("pw123456", hash_password("pw123456"))
    store.remove("keys", "scripts")
    assert not store.check_key(key)


def test_login_and_api_key_when_configured(tmp_path: Path) -> None:
    store = AuthStore(tmp_path / "auth.json")
    store.add_user("ana", PASSWORD)
    key = store.add_key("scripts")
    with serving(tmp_path) as (url, log):
        # The API: no key, a wrong key -> 401 that reveals nothing; the right key works.
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            request = urllib.request.Request(url + "v1/models", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 401
            body = refused.value.read().decode()
            assert "SmolLM2" not in body and "ana" not in body
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=url + "v1", api_key="wrong", max_retries=0).models.list()
        models = OpenAI(base_url=url + "v1", api_key=key, max_retries=0).models.list()
        assert any(m.id.startswith("SmolLM2") for m in models)

        # The UI: nothing without a login; with one, the chat answers.
        with pytest.raises(Exception):  # noqa: B017 - gradio_client's error type varies by version
            Client(url, verbose=False).predict("hi", api_name="/chat")
        answer = Client(url, auth=("ana", PASSWORD), verbose=False).predict(
            "Say hi.", api_name="/chat"
        )
        assert answer[0][-1]["role"] == "assistant"
    text = log.read_text()
    assert PASSWORD not in text and key not in text, "secrets never reach the log"


def test_an_open_network_bind_is_warned_of(tmp_path: Path) -> None:
    with serving(tmp_path, host="0.0.0.0") as (_url, log):
        deadline = time.monotonic() + 10
        while "no login" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    assert "listening on 0.0.0.0 with no login" in log.read_text()
