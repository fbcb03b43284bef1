"""Ingestion in a background thread, so a UI can show progress and cancel it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from localllm.index.ingest import Ingestor, IngestProgress, IngestReport


class IngestJob:
    def __init__(
        self, ingestor: Ingestor, paths: Sequence[Path], collection: str, scrub_pii: bool | None
    ) -> None:
        self.id = uuid.uuid4().hex
        self.progress: IngestProgress | None = None
        self.report: IngestReport | None = None
        self.error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ingestor, list(paths), collection, scrub_pii), daemon=True
        )

    def _run(
        self, ingestor: Ingestor, paths: list[Path], collection: str, scrub_pii: bool | None
    ) -> None:
        try:
            self.report = ingestor.ingest(
                paths,
                collection,
                scrub_pii=scrub_pii,
                progress=self._on_progress,
                should_stop=self._cancel.is_set,
            )
        except BaseException as e:  # surfaced to whoever follows the job
            self.error = e

    def _on_progress(self, progress: IngestProgress) -> None:
        self.progress = progress

    def start(self) -> IngestJob:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.done
