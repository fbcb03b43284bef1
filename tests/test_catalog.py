from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import pytest

from localllm.config import Settings
from localllm.errors import LocalLLMError, ModelLoadError, ModelNotFoundError
from localllm.llm.catalog import delete_model, describe, list_models, resolve
from localllm.llm.gguf_header import GGUFFormatError, read_header
from localllm.llm.llamacpp import LlamaCppChatModel
from tests.gguf_factory import write_lora_adapter


def test_header_reader_agrees_with_gguf_library(bundled_path: Path) -> None:
    reference = gguf.GGUFReader(bundled_path)
    header = read_header(bundled_path)
    for name, field in reference.fields.items():
        if name.startswith("GGUF."):
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            assert header.array_lengths[name] == len(field.data), name
        else:
            assert header.metadata[name] == pytest.approx(field.contents()), name
    assert [t.name for t in header.tensors] == [t.name for t in reference.tensors]
    for ours, theirs in zip(header.tensors, reference.tensors, strict=True):
        assert ours.n_elements == int(theirs.n_elements)
        assert ours.n_bytes == int(theirs.n_bytes)
        assert header.data_offset + ours.offset == int(theirs.data_offset)


def test_bundled_model_metadata(settings: Settings, bundled_path: Path) -> None:
    models = list_models(settings)
    bundled = next(m for m in models if m.bundled)
    reference = gguf.GGUFReader(bundled_path)
    assert bundled.ok and bundled.kind == "model"
    assert bundled.architecture == "llama"
    assert bundled.quantization == "Q4_1"
    assert bundled.context_length == 8192
    assert bundled.has_chat_template
    assert bundled.parameters == sum(int(t.n_elements) for t in reference.tensors)
    assert bundled.size_bytes == bundled_path.stat().st_size
    assert resolve(settings, "bundled").path == str(bundled_path)
    assert resolve(settings, None).path == str(bundled_path)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.gguf", b"", "too small"),
        ("program.gguf", b"MZ\x90\x00" + b"\x00" * 4096, "not a GGUF"),
        ("text.gguf", b"<html>404 not found</html>" * 10, "not a GGUF"),
    ],
)
def test_broken_files_are_listed_with_a_reason(
    settings: Settings, name: str, content: bytes, reason: str
) -> None:
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / name).write_bytes(content)
    models = {m.name: m for m in list_models(settings)}
    assert models[name].status == "broken"
    assert reason in (models[name].error or "")
    assert any(m.bundled and m.ok for m in models.values()), (
        "a broken file must not hide the others"
    )
    with pytest.raises(ModelLoadError, match=reason):
        resolve(settings, name)


def test_truncated_model_is_broken(settings: Settings, bundled_path: Path) -> None:
    settings.models_dir.mkdir(parents=True)
    data = bundled_path.read_bytes()
    (settings.models_dir / "half.gguf").write_bytes(data[: len(data) // 2])
    (settings.models_dir / "header-only.gguf").write_bytes(data[:200_000])
    models = {m.name: m for m in list_models(settings)}
    assert models["half.gguf"].status == "broken"
    assert "truncated" in (models["half.gguf"].error or "")
    assert models["header-only.gguf"].status == "broken"
    with pytest.raises(GGUFFormatError, match="truncated"):
        read_header(settings.models_dir / "half.gguf")


def test_lora_adapter_is_recognised_and_loads(settings: Settings, bundled_path: Path) -> None:
    settings.models_dir.mkdir(parents=True)
    adapter = write_lora_adapter(
        settings.models_dir / "smollm2--run1.lora.gguf", bundled_path, scale=0.05
    )
    info = describe(adapter)
    assert info.ok and info.kind == "adapter"
    assert info.base == "smollm2"
    assert info.architecture == "llama"
    assert all(m.kind == "model" for m in list_models(settings) if m.name != adapter.name)
    # The adapter is a real one: llama.cpp applies it over the quantized base.
    model = LlamaCppChatModel(bundled_path, context_size=256, lora_path=adapter)
    try:
        assert model.count_tokens("hello") > 0
    finally:
        model.close()


def test_user_model_shadows_nothing_and_resolves_by_stem(
    settings: Settings, bundled_path: Path
) -> None:
    settings.models_dir.mkdir(parents=True)
    shutil.copy(bundled_path, settings.models_dir / "mine.gguf")
    assert resolve(settings, "mine").name == "mine.gguf"
    assert resolve(settings, "mine.gguf").name == "mine.gguf"
    names = [m.name for m in list_models(settings)]
    assert names.count("mine.gguf") == 1 and any("SmolLM2" in n for n in names)


def test_missing_model_names_the_alternatives(settings: Settings) -> None:
    with pytest.raises(
        ModelNotFoundError, match=r"no model named 'nope.gguf'; available: .*SmolLM2"
    ):
        resolve(settings, "nope.gguf")


def test_delete_model_stays_inside_the_models_folder(settings: Settings, tmp_path: Path) -> None:
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / "a.gguf").write_bytes(b"x" * 100)
    outside = tmp_path / "outside.gguf"
    outside.write_bytes(b"keep me")
    with pytest.raises(LocalLLMError):
        delete_model(settings, "../outside.gguf")
    assert outside.exists()
    delete_model(settings, "a.gguf")
    assert not (settings.models_dir / "a.gguf").exists()
    with pytest.raises(ModelNotFoundError):
        delete_model(settings, "a.gguf")


def test_an_adapter_over_a_model_here_is_a_chat_model(
    settings: Settings, bundled_path: Path
) -> None:
    """A LoRA naming a base in the catalog is offered for chat and loads over that base; one whose
    base is missing is listed but not offered, and asking for it says which base is missing."""
    from localllm.llm.catalog import chat_models
    from localllm.llm.manager import ModelManager

    settings.models_dir.mkdir(parents=True)
    ours = write_lora_adapter(
        settings.models_dir / "tuned.lora.gguf",
        bundled_path,
        scale=0.05,
        base_name=bundled_path.name,
    )
    orphan = write_lora_adapter(
        settings.models_dir / "orphan.lora.gguf", bundled_path, scale=0.05, base_name="gone.gguf"
    )
    offered = [m.name for m in chat_models(settings)]
    assert ours.name in offered and orphan.name not in offered
    manager = ModelManager(settings)
    try:
        model = manager.get(ours.name)
        assert model.path == bundled_path and model.lora_path == ours
        assert model.name == ours.name
        with pytest.raises(ModelNotFoundError, match=r"gone\.gguf"):
            manager.get(orphan.name)
    finally:
        manager.close()
