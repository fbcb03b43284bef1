"""The fast embedder: a sentence-transformers model exported once to ONNX, run by ONNX Runtime.

`ensure_artifact` exports the whole pipeline (transformer, pooling, normalize) with torch, fuses the
BERT graph with ONNX Runtime's optimizer, optionally quantizes weights to int8 per channel, checks the
result against torch fp32 and caches the file. `OnnxEncoder` then needs neither torch nor
sentence-transformers: the tokenizer and the settings travel in the file's metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VARIANTS = ("onnx", "onnx-int8")
RECIPE = 1  # bump when the build changes, so files built the old way are not reused
MIN_MEAN_COSINE = 0.99
MIN_COSINE = 0.97
STALE_BUILD_SECONDS = 3600
_META = "localllm."

# Varied real-world text: short queries, prose, code, numbers, a list, and one text longer than any
# max_seq_length, so the check covers truncation too.
SAMPLE_TEXTS = (
    "How do I install a package from a local .deb file?",
    "What is the difference between a list and a vector in R?",
    "The maintainer must upload the package to the archive after the freeze has been lifted.",
    "Use lm(y ~ x, data = df) to fit a linear model; summary() prints the coefficients.",
    "canvas.drawString(100, 750, 'Hello world') draws text at the given coordinates.",
    "Table 3: revenue grew 12.5% in Q3 2021, from $4.2M to $4.7M, while costs stayed flat.",
    "Kernel panic after upgrading: boot the previous kernel from the GRUB menu and report a bug.",
    "Why is the sky blue? Rayleigh scattering affects short wavelengths more than long ones.",
    "apt-get update; apt-get dist-upgrade; then reboot to load the new kernel",
    "The committee approved the budget, the schedule and the list of invited speakers.",
    "ok",
    " ".join(
        f"Section {i}: the security team reviews every advisory, assigns a CVE identifier, "
        "prepares fixed packages for the stable release and announces them on the mailing list."
        for i in range(1, 30)
    ),
)


class ExportError(Exception):
    """An ONNX variant could not be built or did not match torch closely enough."""


def _onnxruntime() -> Any:
    """onnxruntime, imported with its telemetry off even if apply_privacy never ran. Its native
    code reads the variable once, at import: disable_telemetry_events() afterwards still leaves a
    device id and a database under ~/.cache/Microsoft and looks up Microsoft's collector."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def artifact_path(model_path: Path, cache_dir: Path, variant: str) -> Path:
    """Where the built file for this model, variant and recipe lives (a new name when any changes)."""
    digest = hashlib.sha256(f"{RECIPE}:{variant}:{version('onnxruntime')}".encode())
    for file in sorted(p for p in model_path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(model_path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_path.name).strip("-.") or "model"
    return cache_dir / f"{slug}-{digest.hexdigest()[:16]}.{variant}.onnx"


def ensure_artifact(model_path: Path, cache_dir: Path, variant: str, *, threads: int = 1) -> Path:
    """The cached ONNX file, built first if missing. Safe against races and interrupted builds:
    each build works in its own temporary folder and renames its result into place. A variant
    that can't be built or fails its check is remembered, so it is not rebuilt on every start."""
    if variant not in VARIANTS:
        raise ExportError(f"unknown ONNX variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    target = artifact_path(model_path, cache_dir, variant)
    rejected = target.with_suffix(".rejected")
    _remove_stale_builds(cache_dir)
    if target.is_file():
        return target
    if rejected.is_file():
        raise ExportError(rejected.read_text(encoding="utf-8").strip())
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=cache_dir) as tmp:
        try:
            built = _build(model_path, Path(tmp), variant, threads)
        except ExportError as e:
            note = Path(tmp) / "rejected"
            note.write_text(f"{e}\n", encoding="utf-8")
            os.replace(note, rejected)
            raise
        os.replace(built, target)
    log.info("built %s in %.1f s", target.name, time.perf_counter() - started)
    return target


def _remove_stale_builds(cache_dir: Path) -> None:
    """Temporary folders an interrupted build left behind (a live build is never this old)."""
    now = time.time()
    for folder in cache_dir.glob(".build-*"):
        with contextlib.suppress(OSError):
            if now - folder.stat().st_mtime > STALE_BUILD_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)


def _build(model_path: Path, tmp: Path, variant: str, threads: int) -> Path:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _export_check(model_path, tmp, variant, threads)
    finally:
        torch.set_num_threads(previous)


def _export_check(model_path: Path, tmp: Path, variant: str, threads: int) -> Path:
    from sentence_transformers import SentenceTransformer

    try:
        # Eager attention exports as plain ops that the optimizer can fuse into one Attention op.
        model = SentenceTransformer(
            str(model_path),
            device="cpu",
            local_files_only=True,
            model_kwargs={"attn_implementation": "eager"},
        )
    except Exception as e:
        raise ExportError(f"sentence-transformers could not load {model_path}: {e}") from e
    tokenizer = getattr(model.tokenizer, "backend_tokenizer", None)
    if tokenizer is None or not model.max_seq_length:
        raise ExportError("the ONNX path needs a fast (tokenizers) tokenizer and a max_seq_length")
    model.eval()
    exported = _export(model, tmp / "model.onnx")
    final = _optimize(model, exported, tmp / "optimized.onnx")
    if variant == "onnx-int8":
        final = _quantize(final, tmp / "int8.onnx")
    _add_metadata(
        final,
        {
            "tokenizer": tokenizer.to_str(),
            "max_seq_length": str(model.max_seq_length),
            "pad_id": str(model.tokenizer.pad_token_id or 0),
            "pad_token": str(model.tokenizer.pad_token or "[PAD]"),
            "dimension": str(embedding_dimension(model)),
            "variant": variant,
            "source": str(model_path),
        },
    )
    # One text per call, as Embedder.embed runs int8 (its activations are scaled per call).
    encoder = OnnxEncoder(final, threads=threads)
    vectors = np.vstack([encoder.encode([text]) for text in SAMPLE_TEXTS])
    reference = model.encode(
        list(SAMPLE_TEXTS),
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    cosines = np.sum(vectors * reference, axis=1)
    if cosines.mean() < MIN_MEAN_COSINE or cosines.min() < MIN_COSINE:
        raise ExportError(
            f"{variant} drifts from torch fp32 (mean cosine {cosines.mean():.4f}, "
            f"min {cosines.min():.4f}); not using it"
        )
    _add_metadata(final, {"check_mean_cosine": f"{cosines.mean():.5f}"})
    return final


def _pipeline(model: Any, names: Sequence[str]) -> Any:
    """The SentenceTransformer as tracing wants it: positional tensors in, one tensor out."""
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(names, inputs, strict=True)))["sentence_embedding"]

    return Pipeline().eval()


def _export(model: Any, path: Path) -> Path:
    import torch

    sample = model.tokenizer(
        list(SAMPLE_TEXTS[:2]),
        padding=True,
        truncation=True,
        max_length=model.max_seq_length,
        return_tensors="pt",
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    if "attention_mask" not in names:
        raise ExportError("the tokenizer gives no attention mask")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _pipeline(model, names),
                tuple(sample[n] for n in names),
                str(path),
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed: {e}") from e
    return path


def _optimize(model: Any, src: Path, dst: Path) -> Path:
    """Fuse attention, layer norms and GELU; a graph it can't fuse is kept as exported."""
    _onnxruntime()
    from onnxruntime.transformers.optimizer import optimize_model

    config = model[0].auto_model.config
    try:
        optimized = optimize_model(
            str(src),
            model_type="bert",
            num_heads=getattr(config, "num_attention_heads", 0),
            hidden_size=getattr(config, "hidden_size", 0),
            opt_level=0,
        )
        optimized.save_model_to_file(str(dst))
    except Exception as e:
        log.warning("ONNX graph fusion failed, using the plain export: %s", e)
        return src
    return dst


def embedding_dimension(model: Any) -> int:
    """sentence-transformers 6 renamed get_sentence_embedding_dimension; accept both."""
    getter = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return int(getter() or 0)


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize(src: Path, dst: Path) -> Path:
    """Dynamic int8: weights per output channel (per tensor loses too much: mean cosine 0.94),
    activations scaled per call at run time."""
    from onnx import TensorProto

    _onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    except Exception as e:
        raise ExportError(f"int8 quantization failed: {e}") from e
    finally:
        logging.getLogger().removeFilter(hint)
    return dst


def _add_metadata(path: Path, values: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = _META + key, value
    onnx.save(model, str(path))


class OnnxEncoder:
    """Tokenize, run, normalize: the whole embedder in ONNX Runtime, from one cached file."""

    def __init__(self, path: Path, *, threads: int, call_tokens: int = 0) -> None:
        from tokenizers import Tokenizer

        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if threads > 1:
            # Spinning workers stall each other when another program holds a core.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
            meta = self.session.get_modelmeta().custom_metadata_map
            self.meta = {k.removeprefix(_META): v for k, v in meta.items() if k.startswith(_META)}
            self.tokenizer = Tokenizer.from_str(self.meta["tokenizer"])
        except Exception as e:
            raise ExportError(f"ONNX Runtime could not load {path.name}: {e}") from e
        self.max_seq_length = int(self.meta["max_seq_length"])
        self.dimension = int(self.meta["dimension"])
        self.tokenizer.enable_truncation(self.max_seq_length)
        self.tokenizer.enable_padding(
            pad_id=int(self.meta["pad_id"]), pad_token=self.meta["pad_token"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.call_tokens = call_tokens  # padded tokens per call, for Embedder; 0: one text

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feeds = {name: np.asarray(columns[name], dtype=np.int64) for name in self.inputs}
        vectors = np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)
        return _normalize(vectors)


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
