"""The sign-in gate: with a login configured, nothing of the app is readable before signing in.

Gradio computes its API description (collection names, files, the system prompt) on `/` whether
or not the visitor is signed in, and some of its routes (`/gradio_api/cancel`, FastAPI's
`/openapi.json`) never ask. So this ASGI middleware sits in front of all of them: a visitor
without a Gradio session gets a page of our own on `/`, Gradio's `POST /login` (rate-limited per
client address) and the `/v1` API (which checks its own Bearer key); everything else is 401.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import cookie_parser

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOGIN_PATHS = frozenset({"/login", "/login/"})
# Gradio's launch() calls this once and fails when it is refused; it only answers true or false.
STARTUP_PATH = "/gradio_api/startup-events"
API_PREFIX = "/v1/"

_SCRIPT = """
const form = document.getElementById("signin");
const note = document.getElementById("note");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = form.querySelector("button");
  button.disabled = true;
  note.textContent = "";
  try {
    const r = await fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
    });
    if (r.ok && (await r.json()).success) {
      location.reload();
      return;
    }
    if (r.status === 429) {
      const wait = r.headers.get("Retry-After") || "60";
      note.textContent = `Too many failed sign-ins; try again in ${wait} s`;
    } else if (r.status === 400) {
      note.textContent = "Wrong name or password";
    } else {
      note.textContent = `Sign-in failed (${r.status})`;
    }
  } catch (e) {
    note.textContent = "The server can't be reached";
  } finally {
    button.disabled = false;
  }
});
"""

_STYLE = """
body { font-family: system-ui, sans-serif; background: #f4f4f5; color: #18181b; margin: 0;
       min-height: 100vh; display: flex; align-items: center; justify-content: center; }
form { background: #fff; padding: 2rem; border-radius: 12px; width: 18rem;
       box-shadow: 0 1px 3px rgba(0, 0, 0, .15); display: flex; flex-direction: column; gap: .75rem; }
h1 { font-size: 1.25rem; margin: 0 0 .5rem; }
label { display: flex; flex-direction: column; gap: .25rem; font-size: .9rem; }
input { font: inherit; padding: .5rem; border: 1px solid #d4d4d8; border-radius: 6px; }
button { font: inherit; padding: .6rem; border: 0; border-radius: 6px; background: #ea580c;
         color: #fff; cursor: pointer; }
button:disabled { opacity: .6; }
#note { color: #b91c1c; min-height: 1.2em; margin: 0; font-size: .9rem; }
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>LocalLLM: sign in</title>
<style>{style}</style>
</head>
<body>
<form id="signin" method="post" action="{action}">
<h1>LocalLLM: sign in</h1>
<label>Name <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required>
</label>
<button type="submit">Sign in</button>
<p id="note" role="alert"></p>
</form>
<script>{script}</script>
</body>
</html>
"""


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


_CSP = (
    f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_STYLE)}; "
    "img-src data:; connect-src 'self'; form-action 'self'; base-uri 'none'"
)


def signin_page(root_path: str = "") -> bytes:
    action = html.escape(root_path.rstrip("/") + "/login", quote=True)
    return _PAGE.format(style=_STYLE, script=_SCRIPT, action=action).encode()


class FailedSignIns:
    """Failed sign-ins per client address in a sliding window; at `limit`, the address waits.

    An attempt in flight counts as a failure until it ends, so a burst of parallel guesses can't
    slip past the limit.
    """

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._pending: dict[str, int] = {}

    def _recent(self, ip: str) -> deque[float]:
        failures = self._failures.get(ip, deque())
        cutoff = self._clock() - self.window_s
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            self._failures.pop(ip, None)
        return failures

    def retry_after(self, ip: str) -> int | None:
        """Seconds until `ip` may try again, or None when it may try now."""
        failures = self._recent(ip)
        if len(failures) + self._pending.get(ip, 0) < self.limit:
            return None
        if len(failures) < self.limit:
            return 1  # only attempts in flight fill the window: one of them will end soon
        oldest = failures[len(failures) - self.limit]
        return max(1, math.ceil(oldest + self.window_s - self._clock()))

    def begin(self, ip: str) -> None:
        self._pending[ip] = self._pending.get(ip, 0) + 1

    def end(self, ip: str, *, failed: bool) -> None:
        left = self._pending.get(ip, 1) - 1
        if left > 0:
            self._pending[ip] = left
        else:
            self._pending.pop(ip, None)
        if failed:
            self.record(ip)

    def record(self, ip: str) -> None:
        if len(self._failures) > 10_000:  # forget addresses whose failures have all expired
            for stale in list(self._failures):
                self._recent(stale)
        failures = self._recent(ip)
        failures.append(self._clock())
        self._failures[ip] = failures
        if len(failures) == self.limit:
            log.warning("sign-in locked for %s after %d failures", ip, self.limit)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :]
    return path or "/"


def _client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _signed_in(scope: Scope) -> bool:
    app = scope.get("app")
    tokens = getattr(app, "tokens", None)
    cookie_id = getattr(app, "cookie_id", None)
    if not tokens or cookie_id is None:
        return False
    header = next((v for k, v in scope.get("headers", []) if k == b"cookie"), None)
    if header is None:
        return False
    cookies = cookie_parser(header.decode("latin-1"))
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        token = cookies.get(name)
        if token and token in tokens:
            return True
    return False


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: dict[str, str] | None = None,
    *,
    head: bool = False,
) -> None:
    headers = {
        "content-type": content_type,
        "content-length": str(len(body)),
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
        **(extra or {}),
    }
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


def _error(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind}}).encode()


class SignInGate:
    """ASGI middleware for the Gradio app (`scope["app"]` must be Gradio's `App`, which holds
    the session tokens its `/login` hands out)."""

    def __init__(self, app: ASGIApp, *, max_failures: int = 5, window_s: float = 300.0) -> None:
        self.app = app
        self.failures = FailedSignIns(max_failures, window_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or _signed_in(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # the connect message; closing before accepting refuses it
            await send({"type": "websocket.close", "code": 1008})
            return
        path, method = _route_path(scope), scope["method"]
        if path in LOGIN_PATHS and method == "POST":
            await self._login(scope, receive, send)
        elif path.startswith(API_PREFIX):
            await self._api(scope, receive, send)
        elif path == STARTUP_PATH and method == "GET":
            await self.app(scope, receive, send)
        elif path == "/" and method in ("GET", "HEAD"):
            page = signin_page(scope.get("root_path", ""))
            headers = {"content-security-policy": _CSP, "referrer-policy": "no-referrer"}
            await _respond(
                send, 200, page, "text/html; charset=utf-8", headers, head=method == "HEAD"
            )
        else:
            body = _error("sign in first", "authentication_error")
            await _respond(send, 401, body, "application/json")

    async def _refuse_if_locked(self, ip: str, send: Send) -> bool:
        wait = self.failures.retry_after(ip)
        if wait is None:
            return False
        body = _error(f"too many failed sign-ins; try again in {wait} s", "rate_limit_error")
        await _respond(send, 429, body, "application/json", {"retry-after": str(wait)})
        return True

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Pass the request on; the response's status."""
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        return status

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        ip = _client_ip(scope)
        if await self._refuse_if_locked(ip, send):
            return
        self.failures.begin(ip)
        status = 0
        try:
            status = await self._forward(scope, receive, send)
        finally:
            self.failures.end(ip, failed=status != 200)

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        ip = _client_ip(scope)
        if await self._refuse_if_locked(ip, send):
            return
        if await self._forward(scope, receive, send) == 401:
            self.failures.record(ip)
