"""Grounded fine-tuning (RAFT) on real parts: the Debian FAQ ingested into Chroma with the bundled
embedder, the bundled SmolLM2 writing the questions, the app's own retriever and grounded prompt
choosing and numbering the sources; then a named run of a few steps on those examples."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localllm.config import Settings
from localllm.errors import DatasetError
from localllm.finetune import jobs
from localllm.finetune.data import load_jsonl, write_jsonl
from localllm.finetune.grounded import GroundedSet, cite, grounded_from_documents, holds_answer
from localllm.finetune.names import RunNameError, file_part, merged_beside, named_adapter_file
from localllm.llm.catalog import list_models
from localllm.llm.llamacpp import LlamaCppChatModel
from localllm.llm.manager import params_from_settings
from localllm.rag.prompt import ANSWER_CUE, GROUNDED_RULES, REFUSAL, SOURCES_END, SOURCES_START
from localllm.services import Services
from localllm.ui.finetune_view import preview_rows
from tests.conftest import require, run_cli
from tests.rag_fixtures import FAQ_NAME, clean_cli_env, clean_settings, faq_path

MISSING = [m for m in ("torch", "peft", "trl") if importlib.util.find_spec(m) is None]
SOURCES = 3  # the chat's rag_sources here: shorter prompts, a quicker training


@dataclass
class Built:
    services: Services
    settings: Settings
    made: GroundedSet
    root: Path


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, shared_cache: Path, engine: LlamaCppChatModel
) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("grounded")
    settings = clean_settings(root, shared_cache, rag_sources=SOURCES)
    services = Services(settings)
    try:
        report = services.ingestor().ingest([faq_path()], "faq")
        assert [r.status for r in report.results] == ["added"], report.to_dict()
        made = grounded_from_documents(services, engine, "faq", max_pairs=8, decline_share=0.25)
        yield Built(services, settings, made, root)
    finally:
        services.close()


def rendered_sources(user: str) -> list[tuple[int, str]]:
    """(n, label line) of each source in a user turn, in the order the prompt shows them."""
    block = user.split(SOURCES_START, 1)[1].split(SOURCES_END, 1)[0]
    return [(int(m.group(1)), m.group(0)) for m in re.finditer(r"^\[(\d+)\] .*$", block, re.M)]


def source_texts(user: str) -> list[str]:
    """The text of each source in a user turn."""
    block = user.split(SOURCES_START, 1)[1].split(SOURCES_END, 1)[0]
    return [part for part in re.split(r"^\[\d+\] .*$", block, flags=re.M) if part.strip()]


def test_examples_are_the_apps_grounded_prompt_with_the_golden_source_cited(
    built: Built, engine: LlamaCppChatModel
) -> None:
    made = built.made
    assert made.examples, made.skipped
    assert made.pairs == len(made.examples) + sum("unasked" in s for s in made.skipped)
    chat = built.services.grounded(engine)
    params = params_from_settings(built.settings)
    cited = [e for e in made.examples if e.messages and e.messages[-1]["content"] != REFUSAL]
    assert cited, "every example declines"
    for example in made.examples:
        assert example.messages is not None
        system, user, assistant = example.messages
        assert (system["role"], user["role"], assistant["role"]) == ("system", "user", "assistant")
        assert system["content"] == GROUNDED_RULES
        grounded = (example.source or {})["grounded"]
        question = grounded["question"]
        assert user["content"].startswith(SOURCES_START)
        assert user["content"].endswith(f"Question: {question}\n{ANSWER_CUE}")
        shown = rendered_sources(user["content"])
        # the app's default order: the best source last, next to the question
        assert [n for n, _ in shown] == list(range(len(shown), 0, -1))
        assert all(FAQ_NAME in label for _, label in shown)
        assert [s["n"] for s in grounded["sources"]] == list(range(1, len(shown) + 1))
    for example in cited:
        assert example.messages is not None
        grounded = (example.source or {})["grounded"]
        # exactly what the chat sends for this question: same retrieval, numbering, rules, order
        sent = chat.prepare(engine, grounded["question"], "faq", params)
        assert example.messages[:-1] == sent.messages
        n = grounded["cites"]
        assert re.search(rf"\[{n}\][.!?]?$", example.messages[-1]["content"])
        assert len(grounded["sources"]) > 1, "the golden source comes with distractors"
        if grounded["golden_retrieved"]:
            golden = next(s for s in grounded["sources"] if s["n"] == n)
            assert golden["chunk"] == (example.source or {})["chunk"]
            assert golden["pages"] == (example.source or {})["pages"]


def test_a_share_of_examples_has_only_distractors_and_declines(built: Built) -> None:
    made = built.made
    declining = [e for e in made.examples if e.messages and e.messages[-1]["content"] == REFUSAL]
    assert len(declining) == made.declines >= 1
    assert made.declines <= max(1, round(0.25 * len(made.examples))) + made.missed
    for example in declining:
        assert example.messages is not None
        grounded = (example.source or {})["grounded"]
        assert grounded["cites"] is None
        assert grounded["sources"], "the distractors are still given"
        chunk = (example.source or {})["chunk"]
        assert chunk not in {s["chunk"] for s in grounded["sources"]}
        texts = source_texts(example.messages[1]["content"])
        assert len(texts) == len(grounded["sources"])
        assert not any(holds_answer(text, grounded["answer"]) for text in texts)


def test_the_dataset_goes_through_the_usual_jsonl_path_and_preview(
    built: Built, tmp_path: Path
) -> None:
    path = write_jsonl(built.made.examples, tmp_path / "grounded.jsonl")
    loaded = load_jsonl(path)
    assert not loaded.problems
    assert [e.messages for e in loaded.examples] == [e.messages for e in built.made.examples]
    rows = preview_rows(loaded.examples)
    for row, example in zip(rows, loaded.examples, strict=False):
        grounded = (example.source or {})["grounded"]
        assert row[1].startswith(grounded["question"])
        assert f"[1] {FAQ_NAME} p. " in row[1]
        assert (example.messages or [])[-1]["content"].startswith(row[2].removesuffix("…"))
    assert any("decline" in row[1] for row in rows)
    assert built.made.max_length >= built.made.longest > 256


def test_citing_keeps_the_sentence_end() -> None:
    assert cite("It removes the cache.", 2) == "It removes the cache [2]."
    assert cite("Use dpkg", 1) == "Use dpkg [1]"


def test_a_bad_decline_share_is_refused_before_any_model_call(built: Built) -> None:
    class NoCalls:
        def stream_chat(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("the model was asked")

    with pytest.raises(DatasetError, match=r"between 0 and 1, not 1\.5"):
        grounded_from_documents(built.services, NoCalls(), "faq", decline_share=1.5)  # type: ignore[arg-type]


def test_the_cli_writes_a_grounded_dataset(
    built: Built, shared_cache: Path, tmp_path: Path
) -> None:
    """`localllm dataset docs --grounded --json`: the contract keys, and the examples load."""
    out = tmp_path / "cli.jsonl"
    built.services.close()  # the store admits one process at a time; it reopens when next used
    env = clean_cli_env(built.root, shared_cache, LOCALLLM_RAG_SOURCES=str(SOURCES))
    done = run_cli(
        "dataset", "docs", "--collection", "faq", "--grounded", "--max-pairs", "3",
        "--out", str(out), "--json", env=env, timeout=300,
    )  # fmt: skip
    if done.returncode != 0 and "no usable pairs" in done.stderr:
        pytest.skip("the model wrote no usable pair from these three passages")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert {"path", "examples", "skipped", "declines", "missed", "max_length"} <= set(result)
    loaded = load_jsonl(out)
    assert len(loaded.examples) == result["examples"] >= 1
    assert all((e.messages or [])[0]["content"] == GROUNDED_RULES for e in loaded.examples)


def test_the_tabs_documents_dataset_writes_grounded_examples_that_fit(
    built: Built, tmp_path: Path
) -> None:
    """What the Fine-tune tab's "Answers from my documents (grounded)" writes, and the max tokens
    per example it sets so that no example is cut."""
    import threading

    from localllm.ui.finetune_documents import documents_dataset

    seen: list[tuple[int, int]] = []
    made = documents_dataset(
        built.services,
        "faq",
        tmp_path / "tab.jsonl",
        count=8,  # the fixture's passages: the model made pairs from them
        style="grounded",
        decline_share=0.0,
        progress=lambda done, total, _: seen.append((done, total)),
        cancel=threading.Event(),
    )
    loaded = load_jsonl(made.path)
    declining = sum((e.messages or [])[-1]["content"] == REFUSAL for e in loaded.examples)
    # with a share of 0, only a question none of whose sources holds the answer declines
    assert made.title == f"{len(loaded.examples)} grounded examples from faq, {declining} declining"
    assert seen[:8] == [(i, 8) for i in range(1, 9)]  # the pairs written, then their sources
    assert made.max_length is not None and made.max_length > 256
    assert made.max_length % 64 == 0


# run names


def test_a_run_name_is_made_safe_for_a_file_name() -> None:
    assert file_part("  Debian FAQ: grounded/v2 ") == "Debian-FAQ-grounded-v2"
    assert file_part("ünïcode ok") == "n-code-ok"
    assert len(file_part("x" * 200)) == 60
    with pytest.raises(RunNameError, match="no letter or digit"):
        file_part("../..")
    taken = {"Base.Q4_1--faq.lora.gguf", "Base.Q4_1--faq-2.lora.gguf"}
    assert (
        named_adapter_file("Base.Q4_1.gguf", "r1", " faq ", taken) == "Base.Q4_1--faq-3.lora.gguf"
    )
    assert named_adapter_file("Base.Q4_1.gguf", "r1", "", taken) == "Base.Q4_1--r1.lora.gguf"
    assert merged_beside("/m/Base.Q4_1--faq.lora.gguf", "q8_0") == "Base.Q4_1--faq.Q8_0.gguf"


@pytest.fixture
def _finetune_extra() -> None:
    require(not MISSING, f"the finetune extra is not installed (missing {', '.join(MISSING)})")


@pytest.mark.usefixtures("_finetune_extra")
@pytest.mark.timeout(900)
def test_a_named_run_trains_on_grounded_examples_and_its_file_carries_the_name(
    built: Built, hf_base_cache: Path, tmp_path: Path, bundled_path: Path
) -> None:
    settings = Settings(runs_dir=tmp_path / "runs", models_dir=tmp_path / "models")
    settings.runs_dir.mkdir()
    (settings.runs_dir / ".hf-base").symlink_to(hf_base_cache)
    data = write_jsonl(built.made.examples, tmp_path / "grounded.jsonl")
    run_id, _ = jobs.create_run(
        settings,
        data,
        name="Debian FAQ (grounded)",
        max_steps=2,
        batch_size=1,
        max_length=built.made.max_length,
        rehearsal=0,
        samples=0,
        save_steps=2,
        validation_fraction=0,
    )
    planned = f"{bundled_path.stem}--Debian-FAQ-grounded.lora.gguf"
    info = jobs.run_info(settings, run_id)
    assert info.name == "Debian FAQ (grounded)" and info.truncated == 0
    assert Path(info.config["adapter_gguf"]).name == planned
    # a second run of the same name gets a file of its own
    again, _ = jobs.create_run(settings, data, name="Debian FAQ (grounded)", max_steps=1)
    second = Path(jobs.run_info(settings, again).config["adapter_gguf"]).name
    assert second == planned.replace("grounded.lora", "grounded-2.lora")
    with pytest.raises(RunNameError):
        jobs.create_run(settings, data, name="***", max_steps=1)

    jobs.start(settings, run_id)
    done = jobs.wait(settings, run_id, poll_s=0.5)
    assert done.state == "done", done.error
    adapter = Path(done.adapter_gguf or "")
    assert adapter.name == planned and adapter.is_file()
    listed = {m.name: m for m in list_models(settings)}
    assert listed[planned].kind == "adapter" and listed[planned].ok
    losses = [m["loss"] for m in jobs.metrics(settings, run_id) if "loss" in m]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
