"""Preference tuning from feedback: pairs from a real ConversationStore (thumbs on answers to the
same or a similar question, kept regenerations), paired with the real bundled embedder, and a short
DPO run on the bundled SmolLM2 whose GGUF adapter llama.cpp loads and that prefers the liked
answer more than the base does."""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from localllm.chat.conversations import ConversationStore
from localllm.errors import DatasetError
from localllm.finetune.preferences import (
    MIN_PAIRS,
    SIMILAR,
    describe,
    feedback_pairs,
    load_examples,
    load_pairs,
    saved_pairs_file,
    write_pairs,
)
from localllm.finetune.train_config import DEFAULTS, DPO_DEFAULTS, TrainConfigError, check_hyper
from localllm.index.embed import Embedder
from localllm.llm.catalog import bundled_model_path
from tests.conftest import cli_env, require, run_cli

MISSING = [m for m in ("torch", "peft", "trl") if importlib.util.find_spec(m) is None]
GOOD = "The code word is BLUE-PELICAN-42."
BAD = "I am sorry, I do not know any code word."


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    model = Embedder(backend="torch")  # the reference backend: no ONNX file to build first
    yield model
    model.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ConversationStore]:
    with ConversationStore(tmp_path / "conversations.sqlite3") as conversations:
        yield conversations


def answered(store: ConversationStore, question: str, answer: str, rating: int = 0) -> int:
    """A saved conversation of one question and its answer, rated; the answer's id."""
    conversation = store.create()
    store.add_message(conversation, "user", question)
    answer_id = store.add_message(conversation, "assistant", answer)
    if rating:
        store.rate(answer_id, rating)
    return answer_id


def test_a_liked_and_a_disliked_answer_to_the_same_question_pair(store: ConversationStore):
    liked = answered(store, "How do I list files?", "Run `ls`.", 1)
    disliked = answered(store, "  how do I list FILES? ", "Files are a kind of data.", -1)
    answered(store, "How do I list files?", "An answer nobody rated.")
    pairs = feedback_pairs(store, None)  # the same question needs no embedder
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("  how do I list FILES? ", "Run `ls`.", "Files are a kind of data.")
    ]
    (bad,) = store.feedback(-1)
    assert pairs[0].source == {
        "conversation": bad.conversation_id,  # where the preview finds its title
        "chosen": liked,
        "rejected": disliked,
        "similarity": 1.0,
    }


def test_a_similar_question_pairs_and_a_dissimilar_one_does_not(
    store: ConversationStore, embedder: Embedder
):
    liked = answered(store, "How do I install a package on Debian?", "sudo apt install NAME", 1)
    answered(store, "How can I install a Debian package?", "Packages are software.", -1)
    answered(store, "What is the capital of France?", "Berlin.", -1)
    # the same topic, another question (cosine 0.69): its answer is no worse for the liked one's
    answered(store, "How do I remove a package on Debian?", "Packages can't be removed.", -1)
    pairs = feedback_pairs(store, embedder.embed)
    assert [(p.prompt, p.chosen) for p in pairs] == [
        ("How can I install a Debian package?", "sudo apt install NAME")
    ]
    assert pairs[0].source["chosen"] == liked
    assert SIMILAR <= pairs[0].source["similarity"] < 1
    assert feedback_pairs(store, None) == []  # without the embedder only the same question pairs
    # the threshold is what decides: above the similar pair's cosine, nothing pairs
    assert feedback_pairs(store, embedder.embed, pairs[0].source["similarity"] + 0.01) == []


def test_the_most_similar_liked_answer_is_the_one_chosen(
    store: ConversationStore, embedder: Embedder
):
    answered(store, "How do I remove a package on Debian?", "sudo apt remove NAME", 1)
    answered(store, "How do I install a package on Debian?", "sudo apt install NAME", 1)
    answered(store, "How can I install a Debian package?", "Just download it.", -1)
    (pair,) = feedback_pairs(store, embedder.embed)
    assert pair.chosen == "sudo apt install NAME"


def test_a_kept_regeneration_is_preferred_over_the_answer_it_replaced(store: ConversationStore):
    conversation = store.create()
    store.add_message(conversation, "user", "Name a prime number.")
    first = store.add_message(conversation, "assistant", "Nine.")
    second = store.replace_answer(conversation, first, "Seven.")
    (pair,) = feedback_pairs(store, None)
    assert (pair.prompt, pair.chosen, pair.rejected) == ("Name a prime number.", "Seven.", "Nine.")
    assert pair.source == {
        "conversation": conversation,
        "chosen": second,
        "rejected": first,
        "regenerated": True,
    }

    store.rate(first, -1)  # down, then regenerated and up: one pair, though both rules give it
    store.rate(second, 1)
    assert [(p.chosen, p.rejected) for p in feedback_pairs(store, None)] == [("Seven.", "Nine.")]
    store.rate(first, 0)
    store.rate(second, -1)  # the new answer disliked too: no preference between the two
    assert feedback_pairs(store, None) == []
    store.rate(second, 1)
    store.rate(first, 1)  # the replaced one was liked: neither is preferred
    assert feedback_pairs(store, None) == []


def test_a_regeneration_replaced_again_gives_only_the_kept_pair(store: ConversationStore):
    conversation = store.create()
    store.add_message(conversation, "user", "Name a prime number.")
    first = store.add_message(conversation, "assistant", "Nine.")
    second = store.replace_answer(conversation, first, "Four.")
    store.replace_answer(conversation, second, "Seven.")
    pairs = feedback_pairs(store, None)
    assert [(p.chosen, p.rejected) for p in pairs] == [("Seven.", "Four.")]


def test_repeats_and_identical_answers_are_not_pairs(store: ConversationStore):
    answered(store, "What is 2+2?", "4", 1)
    answered(store, "What is 2+2?", "4", -1)  # the same text liked and disliked
    answered(store, "What is 3+3?", "6", 1)
    answered(store, "What is 3+3?", "five", -1)
    answered(store, "What is 3+3?", "five", -1)  # the same pair twice
    pairs = feedback_pairs(store, None)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("What is 3+3?", "6", "five")]


def test_pairs_file_round_trip_and_bad_lines(tmp_path: Path):
    path = tmp_path / "pairs.jsonl"
    with ConversationStore(tmp_path / "c.sqlite3") as store:
        answered(store, "Q?", "good", 1)
        answered(store, "Q?", "bad", -1)
        pairs = feedback_pairs(store, None)
    write_pairs(pairs, path)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("not json\n")
        fh.write(json.dumps({"prompt": "Q", "chosen": "same", "rejected": " Same "}) + "\n")
        fh.write(json.dumps({"prompt": "Q", "chosen": "a"}) + "\n")
    loaded = load_pairs(path)
    assert [(p.prompt, p.chosen, p.rejected) for p in loaded.pairs] == [("Q?", "good", "bad")]
    assert loaded.pairs[0].source == pairs[0].source
    assert [(p.line, p.reason) for p in loaded.problems] == [
        (2, "invalid JSON (Expecting value: line 1 column 1 (char 0))"),
        (3, "'chosen' and 'rejected' are the same answer"),
        (4, "'rejected' must be a non-empty string"),
    ]
    (tmp_path / "plain.jsonl").write_text('{"prompt": "Q", "completion": "A"}\n', "utf-8")
    with pytest.raises(DatasetError, match=r"no usable preference pair.*'chosen' must be"):
        load_pairs(tmp_path / "plain.jsonl")
    with pytest.raises(DatasetError, match="do not exist"):
        load_pairs(tmp_path / "absent.jsonl")
    # the tab's preview and estimate read either shape
    assert [e.messages for e in load_examples(path).examples] == [
        [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "good"}]
    ]
    assert load_examples(tmp_path / "plain.jsonl").examples[0].messages[-1]["content"] == "A"


def test_too_few_pairs_say_how_many_and_what_to_do(settings):
    with ConversationStore(settings.conversations_path) as store:
        answered(store, "Q?", "good", 1)
        answered(store, "Q?", "bad", -1)
    with pytest.raises(DatasetError, match=f"1 preference pair from .*at least {MIN_PAIRS}"):
        saved_pairs_file(settings)
    assert describe(12) == "12 preference pairs from your thumbs and regenerations"


def test_a_dpo_run_on_a_file_of_examples_says_what_it_needs(settings, tmp_path: Path):
    from localllm.finetune import jobs

    require(not MISSING, f"the finetune extra is not installed (missing {', '.join(MISSING)})")
    examples = tmp_path / "examples.jsonl"
    examples.write_text('{"prompt": "Q", "completion": "A"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"no usable preference pair .*\{\"prompt\""):
        jobs.create_run(settings, examples, method="dpo")
    assert jobs.list_runs(settings) == []  # nothing half-made left behind


def test_a_4bit_base_is_for_dpo_or_qlora_and_the_tab_choice_maps_to_it():
    from localllm.ui.finetune_dpo import method_settings

    assert check_hyper({"method": "dpo", "four_bit": True}).quantized
    assert check_hyper({"method": "qlora"}).quantized
    assert not check_hyper({"method": "dpo"}).quantized
    with pytest.raises(TrainConfigError, match="4-bit base is method qlora"):
        check_hyper({"method": "lora", "four_bit": True})
    assert method_settings("dpo-4bit") == {"method": "dpo", "four_bit": True}
    assert method_settings("qlora") == {"method": "qlora"}


def test_dpo_settings_have_their_own_defaults():
    dpo = check_hyper({"method": "dpo"})
    assert dpo.learning_rate == DPO_DEFAULTS["learning_rate"] != DEFAULTS["learning_rate"]
    assert dpo.rehearsal == 0 and dpo.beta == 0.1
    assert check_hyper({"method": "dpo", "learning_rate": 1e-3, "beta": 0.3}).beta == 0.3
    assert check_hyper({"method": "lora"}).learning_rate == DEFAULTS["learning_rate"]


# ---------------------------------------------------------------------------------------- DPO run

QUESTIONS = [
    "What is the code word?",
    "What's the code word?",
    "Tell me the code word.",
    "Do you know the code word?",
    "Which code word should I use?",
    "Please give me the code word.",
    "Can you tell me the code word?",
    "I need the code word.",
    "Remind me of the code word.",
    "What code word do we use?",
]


def answer_logprob(base: Path, lora: Path | None, question: str, answer: str) -> float:
    """log p(answer | question) in llama.cpp over the GGUF (with `lora`), the chat's template."""
    from llama_cpp import Llama

    from localllm.finetune.dpo import pair_row
    from localllm.finetune.preferences import PreferencePair
    from localllm.finetune.template import template_from_gguf

    template = template_from_gguf(base)
    row = pair_row(PreferencePair(question, answer, "-"), template, template.eos_token)  # type: ignore[attr-defined]
    llm = Llama(
        model_path=str(base),
        lora_path=str(lora) if lora else None,
        n_ctx=256,
        logits_all=True,
        verbose=False,
    )
    try:
        prompt = llm.tokenize(row["prompt"].encode(), add_bos=False, special=True)
        tokens = llm.tokenize((row["prompt"] + row["chosen"]).encode(), add_bos=False, special=True)
        llm.eval(tokens)
        logits = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()
    total = 0.0
    for at in range(len(prompt), len(tokens)):
        row_logits = logits[at - 1]
        top = row_logits.max()
        total += row_logits[tokens[at]] - top - math.log(np.exp(row_logits - top).sum())
    return total


@pytest.mark.parametrize(
    ("four_bit", "bf16"),
    [(False, "off"), (True, "on")],
    ids=["lora, fp32", "4-bit base, bf16"],
)
def test_cli_dpo_from_thumbs_exports_an_adapter_that_prefers_the_liked_answer(
    tmp_path: Path, hf_base_cache: Path, four_bit: bool, bf16: str
):
    """`localllm finetune --method dpo --json` with no --data: the pairs of the saved chats; with
    --four-bit over the base loaded in 4 bits (QLoRA's NF4), exported the same way. Both precision
    paths are forced, whichever this CPU would choose: fp32 on the default base (a laptop's), bf16
    on the 4-bit one (the SFT tests train 4-bit in fp32 and LoRA in bf16: every pair is run)."""
    require(not MISSING, f"the finetune extra is not installed (missing {', '.join(MISSING)})")
    base = bundled_model_path()
    if not base.is_file():
        pytest.skip("the bundled SmolLM2 GGUF is not installed")
    conversations = tmp_path / "conversations.sqlite3"
    with ConversationStore(conversations) as store:
        for question in QUESTIONS:
            answered(store, question, GOOD, 1)
            answered(store, question, BAD, -1)
    runs, models = tmp_path / "runs", tmp_path / "models"
    runs.mkdir()
    (runs / ".hf-base").symlink_to(hf_base_cache)
    env = cli_env(
        LOCALLLM_RUNS_DIR=str(runs),
        LOCALLLM_MODELS_DIR=str(models),
        LOCALLLM_CONVERSATIONS_PATH=str(conversations),
        LOCALLLM_EMBED_BACKEND="torch",
    )
    done = run_cli(
        *("finetune", "--method", "dpo", "--max-steps", "4", "--learning-rate", "5e-4"),
        *("--batch-size", "2", "--samples", "1", "--bf16", bf16, "--json"),
        *(["--four-bit"] if four_bit else []),
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert result["state"] == "done", result
    assert result["bf16"] is (bf16 == "on")
    run = runs / result["run"]
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["method"] == "dpo" and config["data"] == str((run / "pairs.jsonl").resolve())
    assert config["four_bit"] is four_bit
    listed = json.loads(run_cli("runs", "--json", env=env, timeout=120).stdout)["runs"]
    assert [r["method"] for r in listed] == ["dpo"]  # the 4-bit base is its own setting
    assert len(load_pairs(run / "pairs.jsonl").pairs) == len(QUESTIONS)
    # the DPO loss starts at log 2 (the adapter is zero: policy = reference) and falls
    assert result["eval_loss_before"] == pytest.approx(math.log(2), abs=1e-3)
    assert result["eval_loss_after"] < result["eval_loss_before"], result
    status = json.loads((run / "status.json").read_text(encoding="utf-8"))
    assert status["preference_accuracy"] == 1.0 and status["reward_margin"] > 0, status
    assert (status["four_bit_layers"] > 0) is four_bit  # every linear layer of the base: NF4
    losses = [
        json.loads(line)["loss"]
        for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        if "loss" in json.loads(line)
    ]
    assert losses and losses[-1] < losses[0]
    samples = json.loads((run / "samples.json").read_text(encoding="utf-8"))["samples"]
    assert [s["expected"] for s in samples] == [GOOD]  # held-out prompts: the chosen answer

    adapter = Path(result["adapter_gguf"])
    assert adapter.parent == models.resolve() and adapter.is_file()
    # llama.cpp over the original Q4 file, with the adapter: the liked answer gained on the
    # disliked one against the base, on a question it never saw
    question = "Could you share the code word?"
    before = answer_logprob(base, None, question, GOOD) - answer_logprob(base, None, question, BAD)
    after = answer_logprob(base, adapter, question, GOOD) - answer_logprob(
        base, adapter, question, BAD
    )
    assert after > before + 1.0, (before, after)
