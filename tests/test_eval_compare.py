"""`localllm eval compare` and its core: the bundled model and a real LoRA GGUF over it, each
answering questions on the Debian FAQ (real Chroma, real embedder, real llama.cpp) with and without
retrieval, scored against reference answers."""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from localllm.config import Settings
from localllm.errors import DatasetError, LocalLLMError
from localllm.eval.compare import CompareError, compare_models
from localllm.eval.generated_qa import generate_qa, write_qa
from localllm.eval.metrics import EvalDataError, QAItem, load_qa
from localllm.eval.text_scores import rouge_l, token_f1
from localllm.finetune.data import load_jsonl
from localllm.llm.catalog import BUNDLED_FILE
from localllm.llm.llamacpp import LlamaCppChatModel
from localllm.services import Services
from tests.conftest import run_cli
from tests.gguf_factory import write_lora_adapter
from tests.rag_fixtures import FAQ_NAME, clean_cli_env, clean_settings, faq_path

ADAPTER = "tuned.lora.gguf"
MODELS = [BUNDLED_FILE, ADAPTER]
QA = [
    {
        "question": "How do I put a package on hold?",
        "answer": "There are three ways of holding back packages, with dpkg, apt or aptitude.",
        "doc": FAQ_NAME,
        "page": 40,
    },
    {
        "question": "Where is a player for Flash (SWF)?",
        "answer": "Debian ships both gnash and swfdec: two free SWF movie players.",
        "doc": FAQ_NAME,
        "page": 28,
    },
    {
        "question": "What is Debian GNU/Linux?",
        "answer": "Debian GNU/Linux is a particular distribution of the Linux operating system, "
        "and numerous packages that run on it.",
    },
]
ROW_KEYS = {
    "model",
    "retrieval",
    "f1",
    "rouge_l",
    "citation_precision",
    "declined",
    "perplexity",
    "seconds",
}


@dataclass
class Workspace:
    root: Path
    cache: Path
    qa: Path

    def settings(self) -> Settings:
        return clean_settings(self.root, self.cache, max_tokens=48, context_size=2048)

    def env(self) -> dict[str, str]:
        return clean_cli_env(self.root, self.cache, LOCALLLM_MAX_TOKENS="48")


def write_lines(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def space(
    tmp_path_factory: pytest.TempPathFactory, shared_cache: Path, bundled_path: Path
) -> Workspace:
    """The FAQ ingested as collection "faq" by the CLI; the models folder holds a real LoRA
    adapter over the bundled model (random, small: it changes the model's answers and logits)."""
    root = tmp_path_factory.mktemp("compare")
    (root / "models").mkdir()
    write_lora_adapter(root / "models" / ADAPTER, bundled_path, scale=0.05, base_name=BUNDLED_FILE)
    space = Workspace(root, shared_cache, write_lines(root / "qa.jsonl", QA))
    done = run_cli(
        *("ingest", str(faq_path()), "--collection", "faq", "--quiet", "--json"),
        env=space.env(),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return space


def test_reference_scores() -> None:
    said = "There are three ways of holding back packages, with dpkg, apt or aptitude."
    assert token_f1(said, said) == 1.0 and rouge_l(said, said) == 1.0
    assert token_f1("The cat sat.", "a dog ran") == 0.0 and rouge_l("cat sat", "dog ran") == 0.0
    # SQuAD normalisation: case, punctuation and articles don't count
    assert token_f1("The Eiffel tower!", "eiffel Tower") == 1.0
    # 2 shared of 4 said and 3 wanted: P 1/2, R 2/3
    assert token_f1("apt holds packages well", "apt holds nothing") == pytest.approx(4 / 7)
    assert 0.0 < rouge_l("apt holds packages", "apt holds nothing back") < 1.0


def test_reply_logprobs_match_a_full_logits_pass(bundled_path: Path) -> None:
    """The reference's log-probabilities from the loaded model (its prompt cache reused) equal
    those of llama.cpp run with logits for every token; a garbled reference is less likely."""
    from llama_cpp import Llama

    messages = [{"role": "user", "content": QA[0]["question"]}]
    reference = str(QA[0]["answer"])
    model = LlamaCppChatModel(bundled_path, context_size=1024)
    try:
        fresh = model.reply_logprobs(messages, reference)  # type: ignore[arg-type]
        again = model.reply_logprobs(messages, reference)  # type: ignore[arg-type]
        garbled = model.reply_logprobs(messages, " ".join(reversed(reference.split())))  # type: ignore[arg-type]
        prompt, _ = model._render(messages)  # type: ignore[arg-type]
    finally:
        model.close()
    full = Llama(model_path=str(bundled_path), n_ctx=1024, logits_all=True, verbose=False)
    try:
        target = full.tokenize(reference.encode(), add_bos=False, special=False)
        full.eval(prompt + target)
        rows = full.scores[len(prompt) - 1 : len(prompt) + len(target) - 1].astype(np.float64)
        norm = np.log(np.exp(rows - rows.max(1, keepdims=True)).sum(1)) + rows.max(1)
        expected = rows[np.arange(len(target)), target] - norm
    finally:
        full.close()
    assert len(fresh) == len(target) == len(again)
    assert np.allclose(fresh, expected, atol=0.05), (fresh, expected.tolist())
    assert np.allclose(fresh, again, atol=1e-4)
    assert sum(garbled) / len(garbled) < sum(fresh) / len(fresh)


def test_compare_two_models_with_and_without_retrieval(space: Workspace) -> None:
    services = Services(space.settings())
    seen: list[tuple[int, int]] = []
    try:
        result = compare_models(
            services,
            load_qa(space.qa, need_answer=True),
            "faq",
            MODELS,
            progress=lambda done, total, _message: seen.append((done, total)),
        )
    finally:
        services.close()
    assert seen[-1] == (12, 12) and len(seen) == 12
    assert not result.cancelled and result.questions == 3
    assert [(r.model, r.retrieval) for r in result.rows] == [
        (BUNDLED_FILE, True),
        (BUNDLED_FILE, False),
        (ADAPTER, True),
        (ADAPTER, False),
    ]
    for row in result.rows:
        assert row.questions == 3
        assert 0.0 <= row.f1 <= 1.0 and 0.0 <= row.rouge_l <= 1.0 and 0.0 <= row.declined <= 1.0
        assert row.perplexity is not None and math.isfinite(row.perplexity)
        assert row.perplexity > 1.0
        assert row.seconds > 0.0
        answers = [
            a for a in result.answers if (a["model"], a["retrieval"]) == (row.model, row.retrieval)
        ]
        if row.retrieval:
            # two of the three lines have a gold page: a share of those two
            assert row.gold_page_cited in (0.0, 0.5, 1.0)
            assert row.cited is not None and row.cited > 0.0  # the grounded answers cite
            # of the sources each answer cites, the share holding its gold page, averaged
            shares = [
                a["citation_precision"] for a in answers if a["citation_precision"] is not None
            ]
            assert shares and all(0.0 <= p <= 1.0 for p in shares)
            assert row.citation_precision == pytest.approx(sum(shares) / len(shares), abs=1e-4)
            assert (row.citation_precision > 0) == (row.gold_page_cited > 0)
            # the same for the model's own [n] marks, before the answer's check replaced them
            own = [a["model_citation_precision"] for a in answers]
            own = [p for p in own if p is not None]
            assert row.model_citation_precision == (
                pytest.approx(sum(own) / len(own), abs=1e-4) if own else None
            )
        else:
            assert row.citation_precision is None and row.cited is None
            assert row.gold_page_cited is None and row.model_citation_precision is None
            assert all(a["citation_precision"] is None for a in answers)
    base_on, base_off, _, tuned_off = result.rows
    # the sources hold the answers: the reference is likelier given them
    assert base_on.perplexity is not None and base_off.perplexity is not None
    assert base_on.perplexity < base_off.perplexity
    # the adapter was loaded and applied: the same prompts score the references differently
    assert tuned_off.perplexity != base_off.perplexity
    grounded = [a for a in result.answers if a["retrieval"]]
    assert any(a["cites_gold_page"] for a in grounded), grounded
    assert {a["model"] for a in result.answers} == set(MODELS) and len(result.answers) == 12


def test_cancel_keeps_the_rows_finished(space: Workspace) -> None:
    services = Services(space.settings())
    cancel = threading.Event()

    def progress(done: int, _total: int, _message: str) -> None:
        if done == 4:  # the first row (3 plain answers: quick) and one answer of the second
            cancel.set()

    try:
        result = compare_models(
            services,
            load_qa(space.qa, need_answer=True),
            "faq",
            MODELS,
            modes=(False, True),
            progress=progress,
            cancel=cancel,
        )
    finally:
        services.close()
    assert result.cancelled
    assert [(r.model, r.retrieval) for r in result.rows] == [(BUNDLED_FILE, False)]
    assert len(result.answers) == 4


def test_cancel_stops_the_answer_being_written(space: Workspace) -> None:
    """Cancel pressed while the first grounded answer is being written (seconds on this machine):
    nothing of it is scored, and the model is free for the next answer."""
    services = Services(space.settings())
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    try:
        timer.start()
        result = compare_models(
            services, load_qa(space.qa, need_answer=True), "faq", MODELS[:1], cancel=cancel
        )
        assert result.cancelled and result.rows == [] and result.answers == []
        again = compare_models(
            services, load_qa(space.qa, need_answer=True)[:1], "faq", MODELS[:1], modes=(False,)
        )
        assert not again.cancelled and len(again.rows) == 1
    finally:
        timer.cancel()
        services.close()


def test_unusable_inputs_fail_before_any_answer(space: Workspace) -> None:
    services = Services(space.settings())
    item = QAItem("What is apt?", None, None, answer="A package tool.")
    try:
        with pytest.raises(LocalLLMError, match=r"no model named 'nope\.gguf'"):
            compare_models(services, [item], "faq", ["nope.gguf"])
        with pytest.raises(LocalLLMError, match="no collection named 'nothere'"):
            compare_models(services, [item], "nothere", MODELS)
        with pytest.raises(CompareError, match="question 1 has no reference answer"):
            compare_models(services, [QAItem("What is apt?", None, None)], "faq", MODELS)
        assert services.models.loaded is None  # nothing was loaded, let alone answered
    finally:
        services.close()


@pytest.mark.parametrize(
    ("modes", "expected"),
    [
        ([], [(m, r) for m in MODELS for r in (True, False)]),
        (["--retrieval", "without"], [(m, False) for m in MODELS]),
    ],
    ids=["both modes", "without retrieval only"],
)
def test_cli_compare_json(
    space: Workspace, modes: list[str], expected: list[tuple[str, bool]]
) -> None:
    qa = write_lines(space.root / "one.jsonl", QA[:1])
    result = run_cli(
        *("eval", "compare", str(qa), "--collection", "faq"),
        *("--models", ",".join(MODELS), *modes, "--json"),
        env=space.env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "JSON output is one line on stdout"
    rows = json.loads(lines[0])["rows"]
    assert [(r["model"], r["retrieval"]) for r in rows] == expected
    for row in rows:
        assert row.keys() >= ROW_KEYS
        assert isinstance(row["f1"], float) and isinstance(row["perplexity"], float)
        assert (row["citation_precision"] is None) == (not row["retrieval"])


def test_cli_generate_never_overwrites_a_question_set(space: Workspace) -> None:
    before = space.qa.read_text(encoding="utf-8")
    result = run_cli(
        *("eval", "compare", str(space.qa), "--collection", "faq", "--generate", "2"),
        env=space.env(),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "exists" in result.stderr and space.qa.read_text(encoding="utf-8") == before


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "What is apt?"}', r"line 2: missing or empty 'answer'"),
        ("{not json", r"line 2: invalid JSON"),
        ('{"question": "What is apt?", "answer": "A tool.", "page": 3}', r"line 2: 'page' given"),
    ],
)
def test_cli_bad_line_is_named(space: Workspace, line: str, message: str) -> None:
    qa = space.root / "bad.jsonl"
    qa.write_text(json.dumps(QA[0]) + "\n" + line + "\n", encoding="utf-8")
    result = run_cli(
        "eval",
        "compare",
        str(qa),
        "--collection",
        "faq",
        "--models",
        BUNDLED_FILE,
        env=space.env(),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error:" in result.stderr and str(qa) in result.stderr
    assert re.search(message, result.stderr), result.stderr
    with pytest.raises(EvalDataError, match=message):
        load_qa(qa, need_answer=True)


def test_generated_questions_are_an_eval_set_not_training_data(space: Workspace) -> None:
    services = Services(space.settings())
    try:
        items, chunks = generate_qa(
            services.store, services.models.get(BUNDLED_FILE), "faq", max_pairs=3
        )
    finally:
        services.close()
    assert items and len(chunks) == len(items) and all(chunks)
    for item in items:
        assert item.question.strip() and (item.answer or "").strip()
        assert item.doc == FAQ_NAME and item.page is not None and item.page >= 1
    path = write_qa(items, space.root / "generated.qa.jsonl", chunks)
    assert load_qa(path, need_answer=True) == items
    # the fine-tune loader takes none of its lines as a training example
    with pytest.raises(DatasetError, match="no usable line"):
        load_jsonl(path)
