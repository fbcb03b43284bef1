"""Access control: no login on localhost by default; when users and keys exist, the UI asks for a
login and the API for a bearer key, and nothing of the app is readable before signing in; failed
sign-ins are rate-limited; secrets are stored hashed; an open non-local bind is warned of."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from openai import AuthenticationError, OpenAI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from localllm.llm.catalog import bundled_model_path
from localllm.server.auth import AuthStore, check_password, hash_password
from localllm.server.signin import FailedSignIns, SignInGate
from tests.conftest import CHROMIUM_ARGS, chromium_path, cli_env, require, run_cli, serving
from tests.test_browser import foreign_requests

PASSWORD = "correct horse battery"
WRONG = "wrong-guess-7731"


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


def test_failed_sign_ins_slide_out_of_the_window() -> None:
    now = [0.0]
    failures = FailedSignIns(limit=2, window_s=10, clock=lambda: now[0])
    failures.record("1.2.3.4")
    now[0] = 5
    assert failures.retry_after("1.2.3.4") is None
    failures.record("1.2.3.4")
    assert failures.retry_after("1.2.3.4") == 5, "until the first failure is 10 s old"
    assert failures.retry_after("5.6.7.8") is None, "per client address"
    now[0] = 10.5
    assert failures.retry_after("1.2.3.4") is None
    failures.begin("1.2.3.4")  # an attempt in flight counts until it ends
    assert failures.retry_after("1.2.3.4") == 1
    failures.end("1.2.3.4", failed=False)
    assert failures.retry_after("1.2.3.4") is None


def _gated_app(max_failures: int, window_s: float) -> Starlette:
    """A stand-in for Gradio's App: its `/login` hands out a session token kept in `app.tokens`."""

    async def login(request: Request) -> JSONResponse:
        form = await request.form()
        if form.get("password") != PASSWORD:
            return JSONResponse({"detail": "Incorrect credentials."}, 400)
        token = f"token-{len(tokens)}"
        tokens[token] = str(form.get("username"))
        response = JSONResponse({"success": True})
        response.set_cookie("access-token-unsecure-abc", token)
        return response

    async def models(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != "Bearer good":
            return JSONResponse({"error": {"message": "invalid or missing API key"}}, 401)
        return JSONResponse({"data": []})

    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the app, with its secrets")

    tokens: dict[str, str] = {}
    app = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/v1/models", models),
            Route("/", page),
            Route("/config", page),
        ],
        middleware=[Middleware(SignInGate, max_failures=max_failures, window_s=window_s)],
    )
    app.tokens = tokens  # type: ignore[attr-defined]
    app.cookie_id = "abc"  # type: ignore[attr-defined]
    return app


def test_the_gate_counts_failed_logins_and_api_keys() -> None:
    with TestClient(_gated_app(max_failures=3, window_s=0.5)) as anon:
        page = anon.get("/")
        assert page.status_code == 200 and "LocalLLM: sign in" in page.text
        assert (
            "secrets" not in page.text
            and "default-src 'none'" in page.headers["content-security-policy"]
        )
        refused = anon.get("/config")
        assert refused.status_code == 401
        assert refused.json() == {
            "error": {"message": "sign in first", "type": "authentication_error"}
        }
        assert anon.get("/no/such/path").status_code == 401, "what exists is not revealed"

        assert anon.post("/login", data={"username": "ana", "password": WRONG}).status_code == 400
        assert anon.get("/v1/models", headers={"Authorization": "Bearer bad"}).status_code == 401
        assert anon.post("/login", data={"username": "ana", "password": WRONG}).status_code == 400
        for locked in (
            anon.post("/login", data={"username": "ana", "password": PASSWORD}),
            anon.get("/v1/models", headers={"Authorization": "Bearer good"}),
        ):
            assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
            assert locked.json()["error"]["type"] == "rate_limit_error"

        time.sleep(0.6)  # the window slides past the failures
        assert anon.get("/v1/models", headers={"Authorization": "Bearer good"}).status_code == 200
        signed_in = anon.post("/login", data={"username": "ana", "password": PASSWORD})
        assert signed_in.json() == {"success": True}
        assert anon.get("/").text == "the app, with its secrets"
        assert anon.get("/config").status_code == 200


def test_nothing_is_readable_before_signing_in(tmp_path: Path) -> None:
    store = AuthStore(tmp_path / "auth.json")
    store.add_user("ana", PASSWORD)
    key = store.add_key("scripts")
    notes = tmp_path / "quokka-festival-notes.txt"
    notes.write_text("The quokka festival happens in March, on Rottnest Island.\n")
    collection = "Ana private plans"
    system_prompt = "You are Zanzibar-7741, the house assistant."
    env = cli_env(
        LOCALLLM_MODELS_DIR=str(tmp_path / "models"),
        LOCALLLM_DOCS_STORE=str(tmp_path / "docs_store"),
    )
    ingest = run_cli(
        "ingest", str(notes), "--collection", collection, "--quiet", env=env, timeout=300
    )
    assert ingest.returncode == 0, ingest.stderr
    model_file = bundled_model_path().name  # type: ignore[union-attr]
    secrets = (system_prompt, collection, notes.name, model_file)

    with serving(tmp_path, LOCALLLM_SYSTEM_PROMPT=system_prompt) as (url, log):
        anon = httpx.Client(base_url=url, timeout=30)
        page = anon.get("/")
        assert page.status_code == 200 and "<title>LocalLLM: sign in</title>" in page.text
        for leak in (*secrets, "gradio_api_info", "gradio_config", "gradio"):
            assert leak not in page.text, leak
        refused = [
            anon.get("/config"),
            anon.get("/gradio_api/info"),
            anon.get("/openapi.json"),
            anon.get("/docs"),
            anon.get(f"/gradio_api/file={notes}"),
            anon.post("/gradio_api/cancel", json={"session_hash": "x", "fn_index": 0}),
            anon.post("/gradio_api/queue/join", json={"data": [], "fn_index": 0}),
            anon.post("/gradio_api/upload", files={"files": ("a.txt", b"hello")}),
        ]
        for r in refused:
            assert r.status_code == 401, (r.request.url, r.status_code)
            assert r.json()["error"]["type"] == "authentication_error"
            assert not any(s in r.text for s in secrets)

        # Signing in through Gradio's /login gives the real page, which does hold what was hidden.
        user = httpx.Client(base_url=url, timeout=30)
        assert user.post("/login", data={"username": "ana", "password": PASSWORD}).json() == {
            "success": True
        }
        home = user.get("/")
        assert home.status_code == 200 and "gradio" in home.text and collection in home.text
        config = user.get("/config")
        assert config.status_code == 200 and system_prompt in config.text

        # Failed sign-ins from one address: after 5 in 5 minutes even the right password waits,
        # and so does the API with the right key; a session already signed in is left alone.
        wrong = [anon.post("/login", data={"username": "ana", "password": WRONG}) for _ in range(5)]
        assert wrong[0].status_code == 400 and {r.status_code for r in wrong} <= {400, 429}
        for locked in (
            anon.post("/login", data={"username": "ana", "password": PASSWORD}),
            anon.get("/v1/models", headers={"Authorization": f"Bearer {key}"}),
        ):
            assert locked.status_code == 429, locked.text
            assert 1 <= int(locked.headers["retry-after"]) <= 300
            assert locked.json()["error"]["type"] == "rate_limit_error"
            assert WRONG not in locked.text and PASSWORD not in locked.text
        assert user.get("/config").status_code == 200
        anon.close()
        user.close()
    text = log.read_text()
    assert WRONG not in text and PASSWORD not in text and key not in text


@pytest.mark.browser
def test_signing_in_in_the_browser(tmp_path: Path) -> None:
    exe = chromium_path()
    require(exe is not None, "Debian's chromium is not installed (make browser installs it)")
    require(find_spec("playwright") is not None, "playwright is not installed (make install-dev)")
    from playwright.sync_api import sync_playwright

    AuthStore(tmp_path / "auth.json").add_user("ana", PASSWORD)
    with serving(tmp_path) as (url, _log), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(180_000)
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(url)
        assert page.title() == "LocalLLM: sign in"
        page.fill("input[name=username]", "ana")
        page.fill("input[name=password]", WRONG)
        page.click("button[type=submit]")
        page.wait_for_function(
            "() => document.getElementById('note').innerText.includes('Wrong name or password')",
            polling=200,
        )
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.locator("#message textarea").wait_for()  # the Gradio app, after the reload
        browser.close()
    assert not foreign_requests(requested)
