"""A Chroma server as the vector store (Settings.chroma_url): its address, client and errors."""

from __future__ import annotations

import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from localllm.errors import StoreError


def server_address(url: str) -> tuple[str, int, bool]:
    """(host, port, ssl) of a Chroma server URL; the port defaults to 443 for https, else 8000."""
    parts = urllib.parse.urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise StoreError(
            f"{url!r} is not a Chroma server URL (LOCALLLM_CHROMA_URL, like http://127.0.0.1:8000)"
        )
    if parts.path.strip("/") or parts.query:
        raise StoreError(
            f"the Chroma server URL {url!r} should have no path (like http://host:8000)"
        )
    https = parts.scheme == "https"
    return parts.hostname, port or (443 if https else 8000), https


def open_server(url: str) -> Any:
    import chromadb
    import httpx

    host, port, ssl = server_address(url)
    try:
        client = chromadb.HttpClient(
            host=host,
            port=port,
            ssl=ssl,
            settings=chromadb.Settings(anonymized_telemetry=False),
        )
    except Exception as e:
        raise StoreError(f"the Chroma server at {url} is not reachable: {reason(e)}") from e
    # Chroma's client waits forever on a server that hangs; the lock would be held as long.
    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(120.0, connect=10.0)
    return client


def reason(error: BaseException) -> str:
    """The most telling message: a network error's own ("Connection refused"), where Chroma wraps
    it in one of its own ("Could not connect to a Chroma server...")."""
    import httpx

    cause = error.__cause__ or error.__context__
    while cause is not None and not isinstance(error, httpx.TransportError):
        if isinstance(cause, httpx.TransportError):
            error = cause
        cause = cause.__cause__ or cause.__context__
    return str(error) or type(error).__name__


def server_failure(url: str, error: Exception) -> str | None:
    """What went wrong with the Chroma server at `url`, or None when `error` is not the server's."""
    import httpx
    from chromadb.errors import ChromaError

    if isinstance(error, httpx.TransportError):
        return f"the Chroma server at {url} is not reachable: {reason(error)}"
    if isinstance(error, (ChromaError, httpx.HTTPStatusError)):
        return f"the Chroma server at {url} failed: {reason(error)}"
    return None


def store_id(folder: Path) -> str:
    """The docs_store's id, made once: it names its collections on a shared Chroma server."""
    path = folder / "server_id"
    if not path.is_file():
        fresh = path.with_name(path.name + ".new")
        fresh.write_text(uuid.uuid4().hex[:12])
        fresh.replace(path)
    return path.read_text().strip()
