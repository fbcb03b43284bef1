"""Parsing in a worker process, with a stall limit and a memory cap: a parser that hangs or balloons
on a damaged or hostile file is stopped and that file reported; the batch and the app go on.

PDFium, the Office readers and pandoc (a program of its own, which unstructured runs for EPUB, ODT and
RTF) are native or deep code that a thread cannot interrupt, so the limit must be a process boundary;
the worker leads a process group, and stopping it ends pandoc too. One worker (started on first use, with the parsers imported once)
parses file after file; a worker that stalls, crashes or is cancelled is killed and the next file
gets a new one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from localllm.documents.model import DocumentError, ParsedDocument
from localllm.documents.parse import ParseCancelled, parse_file

# The worker is handed its end of a socket by file descriptor (POSIX); elsewhere files are read
# in this process, without the limits.
ISOLATE = os.name == "posix"
STALL_SECONDS = 180.0  # no page finished for this long (OCR takes seconds a page): stuck
MEMORY_MB = 4096  # address space the worker may take: a bomb fails, a 2,400-page manual does not


def serve(fd: int, memory_mb: int) -> None:
    """The worker: parse each (path, name, ocr) it is sent, answering pages and the document."""
    if memory_mb:
        import resource  # POSIX only, as the worker is

        limit = memory_mb << 20
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    link = Connection(fd)
    while True:
        try:
            path, name, ocr = link.recv()
        except (EOFError, OSError):
            return  # the app has gone
        try:
            doc = parse_file(
                Path(path),
                name=name,
                ocr=ocr,
                on_page=lambda done, total: link.send(("page", done, total)),
            )
            link.send(("done", doc))
        except DocumentError as e:
            link.send(("error", str(e)))
        except MemoryError:
            link.send(("error", f"{name}: reading it needs more than the {memory_mb} MB allowed"))
        except Exception as e:  # a reader's own failure on a damaged file: one line
            link.send(("error", f"{name}: can't be read ({type(e).__name__}: {e})"))


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        ours, theirs = socket.socketpair()
        code = (
            f"from localllm.documents.isolated import serve; serve({theirs.fileno()}, {memory_mb})"
        )
        # A session of its own, so stop() also ends what it started (pandoc) with it.
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        self.link = Connection(ours.detach())
        self.memory_mb = memory_mb

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.link.close()
        if self.process.returncode is None:  # not yet reaped: its group id is still its own
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


_lock = threading.Lock()
_worker: _Worker | None = None


def parse_isolated(
    path: Path,
    *,
    name: str | None = None,
    ocr: bool = True,
    on_page: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    stall_seconds: float = STALL_SECONDS,
    memory_mb: int = MEMORY_MB,
    isolate: bool = ISOLATE,
) -> ParsedDocument:
    """parse_file(path) in the worker; DocumentError when it stalls, crashes or runs out of memory,
    ParseCancelled when should_stop() says so (the worker is stopped then, and in those cases).
    With `isolate` False, parse_file here, with no limits."""
    global _worker
    name = name or Path(path).name
    if not isolate:
        return parse_file(Path(path), name=name, ocr=ocr, on_page=on_page, should_stop=should_stop)
    with _lock:
        if _worker is None or _worker.process.poll() is not None or _worker.memory_mb != memory_mb:
            if _worker is not None:
                _worker.stop()
            _worker = _Worker(memory_mb)
        worker = _worker
        try:
            return _parse(worker, str(path), name, ocr, on_page, should_stop, stall_seconds)
        except BaseException:
            worker.stop()  # mid-parse: its state is unknown, the next file gets a new one
            _worker = None
            raise


def _parse(
    worker: _Worker,
    path: str,
    name: str,
    ocr: bool,
    on_page: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
    stall_seconds: float,
) -> ParsedDocument:
    try:
        worker.link.send((path, name, ocr))
    except OSError as e:
        raise DocumentError(f"{name}: the document reader could not be started ({e})") from e
    heard = time.monotonic()
    while True:
        if should_stop is not None and should_stop():
            raise ParseCancelled
        if worker.link.poll(0.2):
            try:
                message: tuple[Any, ...] = worker.link.recv()
            except (EOFError, OSError):
                break
            heard = time.monotonic()
            if message[0] == "page":
                if on_page is not None:
                    on_page(message[1], message[2])
            elif message[0] == "done":
                return message[1]  # type: ignore[no-any-return]
            else:
                raise DocumentError(message[1])
        elif worker.process.poll() is not None:
            break
        elif time.monotonic() - heard > stall_seconds:
            raise DocumentError(
                f"{name}: reading it made no progress for {stall_seconds:.0f} s and was stopped "
                "(a damaged or hostile file?)"
            )
    worker.process.wait(5)
    raise DocumentError(
        f"{name}: the reader crashed on it (exit {worker.process.returncode}): the file is "
        f"damaged, or reading it needs more than {worker.memory_mb} MB of memory"
    )
