"""Files -> parse -> (scrub) -> chunk -> embed -> store, one document at a time, with progress."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from localllm.documents.chunk import chunk_document, search_text
from localllm.documents.isolated import parse_isolated
from localllm.documents.model import DocumentError, ParsedDocument
from localllm.documents.parse import SUPPORTED_EXTENSIONS, ParseCancelled
from localllm.documents.scrub import scrub
from localllm.errors import LocalLLMError
from localllm.index.embed import Embedder, EmbeddingCancelled
from localllm.index.store import DEFAULT_COLLECTION, DocumentStore

log = logging.getLogger(__name__)


@dataclass
class FileResult:
    name: str
    path: str
    status: str  # added | replaced | unchanged | failed | skipped | cancelled
    pages: int = 0
    chunks: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class IngestProgress:
    file_index: int  # 0-based index of the file being worked on
    file_count: int
    name: str
    stage: str  # parse | embed | store | done
    fraction: float  # of this file, 0..1

    @property
    def overall(self) -> float:
        return (self.file_index + self.fraction) / max(1, self.file_count)


@dataclass
class IngestReport:
    collection: str
    results: list[FileResult] = field(default_factory=list)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    def to_dict(self) -> dict[str, object]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return {
            "collection": self.collection,
            "files": [r.to_dict() for r in self.results],
            "counts": counts,
            "failed": len(self.failed),
        }


class IngestCancelled(Exception):
    pass


def collect_files(paths: Sequence[Path]) -> Iterator[tuple[Path, str, bool]]:
    """(file, name stored for it, named explicitly?) for files and, recursively, folders."""
    for path in paths:
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                relative = found.relative_to(path)
                if found.is_file() and not any(p.startswith(".") for p in relative.parts):
                    yield found, relative.as_posix(), False
        else:
            yield path, path.name, True


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _scrubbed(doc: ParsedDocument) -> ParsedDocument:
    totals: dict[str, int] = {}
    for element in doc.elements:
        element.text, counts = scrub(element.text)
        if element.section:
            element.section, _ = scrub(element.section)
        for label, n in counts.items():
            totals[label] = totals.get(label, 0) + n
    if totals:
        found = ", ".join(f"{n} {label.lower()}" for label, n in sorted(totals.items()))
        doc.warnings.append(f"PII redacted before indexing: {found}")
    return doc


class Ingestor:
    def __init__(
        self, store: DocumentStore, embedder: Embedder, *, chunk_tokens: int = 200, ocr: bool = True
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunk_tokens = chunk_tokens
        self.ocr = ocr

    def ingest(
        self,
        paths: Sequence[Path],
        collection: str = DEFAULT_COLLECTION,
        *,
        scrub_pii: bool | None = None,
        progress: Callable[[IngestProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> IngestReport:
        info = self.store.ensure_collection(collection, scrub_pii=scrub_pii)
        report = IngestReport(collection=info.name)
        files = list(collect_files(paths))
        stop = should_stop or (lambda: False)
        for index, (path, name, explicit) in enumerate(files):
            started = time.perf_counter()

            def report_stage(stage: str, fraction: float, i: int = index, n: str = name) -> None:
                if progress is not None:
                    progress(IngestProgress(i, len(files), n, stage, min(1.0, fraction)))

            if stop():
                report.results.extend(
                    FileResult(n, str(p), "cancelled") for p, n, _ in files[index:]
                )
                break
            try:
                result = self._one(
                    path, name, explicit, info.name, info.scrub_pii, report_stage, stop
                )
            except IngestCancelled:
                report.results.extend(
                    FileResult(n, str(p), "cancelled") for p, n, _ in files[index:]
                )
                break
            except DocumentError as e:
                result = FileResult(name, str(path), "failed", error=str(e))
            except LocalLLMError as e:  # the store said why (a Chroma server gone, ...)
                result = FileResult(name, str(path), "failed", error=f"{name}: {e}")
            except Exception as e:  # a bug or a library failure: this file fails, the batch goes on
                log.exception("ingest of %s failed", path)
                result = FileResult(
                    name, str(path), "failed", error=f"{name}: {type(e).__name__}: {e}"
                )
            result.seconds = time.perf_counter() - started
            report.results.append(result)
            report_stage("done", 1.0)
        return report

    def _one(
        self,
        path: Path,
        name: str,
        explicit: bool,
        collection: str,
        scrub_pii: bool,
        report_stage: Callable[[str, float], None],
        stop: Callable[[], bool],
    ) -> FileResult:
        if not path.exists():
            raise DocumentError(f"{name}: no such file or folder")
        if not path.is_file():  # a named pipe or a device: reading it could block for ever
            raise DocumentError(f"{name}: not a regular file (a pipe or a device?)")
        if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
            if not explicit:
                return FileResult(name, str(path), "skipped", error=f"{name}: not a supported type")
            kinds = ", ".join(sorted(SUPPORTED_EXTENSIONS))
            raise DocumentError(
                f"{name}: unsupported file type {path.suffix or '(none)'!r} (supported: {kinds})"
            )
        try:
            sha = file_sha256(path)
        except OSError as e:
            raise DocumentError(f"{name}: can't be read: {e.strerror or e}") from e
        same = self.store.find(collection, doc_id=sha)
        if same:
            note = [] if same[0].name == name else [f"same content as {same[0].name}"]
            return FileResult(name, str(path), "unchanged", same[0].pages, same[0].chunks, note)

        timings: dict[str, float] = {}
        clock = time.perf_counter()
        report_stage("parse", 0.0)
        try:
            doc = parse_isolated(
                path,
                name=name,
                ocr=self.ocr,
                on_page=lambda done, total: report_stage("parse", 0.5 * done / max(1, total)),
                should_stop=stop,
            )
        except ParseCancelled as e:
            raise IngestCancelled from e
        if scrub_pii:
            doc = _scrubbed(doc)
        timings["parse"], clock = time.perf_counter() - clock, time.perf_counter()
        chunks = chunk_document(doc, self.embedder.count_tokens, self.chunk_tokens)
        if not chunks:
            raise DocumentError(f"{name}: no text to index")
        self.store.check_space(len(chunks))  # before minutes of embedding, not after
        timings["chunk"], clock = time.perf_counter() - clock, time.perf_counter()
        report_stage("embed", 0.5)
        try:
            vectors = self.embedder.for_collection(self.store, collection).embed(
                [search_text(c.text, c.section) for c in chunks],
                on_progress=lambda done, total: report_stage(
                    "embed", 0.5 + 0.45 * done / max(1, total)
                ),
                should_stop=stop,
            )
        except EmbeddingCancelled as e:
            raise IngestCancelled from e
        if stop():
            raise IngestCancelled
        timings["embed"], clock = time.perf_counter() - clock, time.perf_counter()
        report_stage("store", 0.95)
        _, replaced = self.store.add_document(collection, doc, chunks, vectors, source=str(path))
        timings["store"] = time.perf_counter() - clock
        return FileResult(
            name,
            str(path),
            "replaced" if replaced else "added",
            pages=doc.pages,
            chunks=len(chunks),
            warnings=list(doc.warnings),
            timings={k: round(v, 4) for k, v in timings.items()},
        )
