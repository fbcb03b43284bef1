"""One writer per document store: Chroma breaks when two processes write one folder."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from localllm.errors import StoreBusyError


class WriterLock:
    def __init__(self, path: Path) -> None:
        self._file = path.open("a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise StoreBusyError(
                f"the document store {path.parent} is in use by another LocalLLM process "
                f"(pid {holder}); use that app, or stop it first"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
