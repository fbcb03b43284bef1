"""A stand-in for the Hugging Face Hub on loopback: the one outer edge the tests fake.

It answers the two requests huggingface_hub makes for a file (HEAD for metadata, GET for the bytes) and
can misbehave the ways real networks do: stop half way, or serve something that is not a GGUF.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # "owner/name/filename" -> bytes
        self.cut_at: dict[str, int] = {}  # send only this many bytes, then drop the connection
        self.requests: list[tuple[str, str]] = []
        self.url = ""


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _key(self) -> str | None:
            # /{owner}/{name}/resolve/{revision}/{filename}
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) >= 5 and parts[2] == "resolve":
                return "/".join([parts[0], parts[1], *parts[4:]])
            return None

        def _headers(self, key: str) -> None:
            body = hub.files[key]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"etag-{len(body)}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()

        def _missing(self) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Error-Message", "Entry not found")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            hub.requests.append(("HEAD", self.path))
            key = self._key()
            if key is None or key not in hub.files:
                self._missing()
                return
            self._headers(key)

        def do_GET(self) -> None:
            hub.requests.append(("GET", self.path))
            key = self._key()
            if key is None or key not in hub.files:
                self._missing()
                return
            body = hub.files[key]
            start = 0
            range_header = self.headers.get("Range", "")
            if range_header.startswith("bytes="):
                start = int(range_header.removeprefix("bytes=").split("-")[0] or 0)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", f'"etag-{len(body)}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
            else:
                self._headers(key)
            cut = hub.cut_at.get(key)
            end = len(body) if cut is None else max(cut, start)
            self.wfile.write(body[start:end])
            self.wfile.flush()
            if cut is not None:
                self.close_connection = True

    return Handler


@contextmanager
def running_fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
