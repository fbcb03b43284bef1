"""`localllm search | ask | eval` as a user runs them: a real subprocess over the FAQ ingested
with `localllm ingest`, the bundled model, JSON on stdout and clear errors on stderr."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from localllm.rag.prompt import REFUSAL
from tests.conftest import run_cli
from tests.rag_fixtures import (
    FAQ_NAME,
    HOLD_PAGE,
    HOLD_QUESTION,
    OUT_OF_CORPUS,
    clean_cli_env,
    eval_set,
    faq_path,
)

SEARCH_KEYS = {"file", "pages", "text", "score"}
ASK_KEYS = {"answer", "sources"}
SOURCE_KEYS = {"n", "file", "page", "text", "score"}
RETRIEVAL_KEYS = {"hit1", "hit5", "hit10", "mrr", "ndcg10", "p50_ms", "p95_ms"}
ANSWER_KEYS = {
    "answerable",
    "unanswerable",
    "source_has_page",
    "cited_has_page",
    "answered",
    "declined_unanswerable",
    "p50_s",
    "p95_s",
}
GOOGLE_EARTH = ("Where is Google Earth?", 28)


@dataclass
class Cli:
    env: dict[str, str]
    root: Path

    def run(self, *args: str, timeout: float = 180) -> tuple[int, str, str]:
        result = run_cli(*args, env=self.env, timeout=timeout)
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, result.stdout, result.stderr

    def json(self, *args: str, timeout: float = 180) -> object:
        code, out, err = self.run(*args, "--json", timeout=timeout)
        assert code == 0, err
        lines = out.strip().splitlines()
        assert len(lines) == 1, "JSON output is one line on stdout"
        return json.loads(lines[0])


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Cli:
    path = faq_path()
    root = tmp_path_factory.mktemp("cli_rag")
    runner = Cli(clean_cli_env(root, shared_cache, LOCALLLM_MAX_TOKENS="48"), root)
    report = runner.json("ingest", str(path), "--collection", "faq", "--quiet", timeout=300)
    assert report["counts"] == {"added": 1}, report  # type: ignore[index]
    return runner


def test_search_json(cli: Cli) -> None:
    hits = cli.json("search", HOLD_QUESTION, "--collection", "faq")
    assert isinstance(hits, list) and len(hits) == 10
    for hit in hits:
        assert isinstance(hit, dict) and hit.keys() >= SEARCH_KEYS, hit
        assert hit["file"] == FAQ_NAME and isinstance(hit["text"], str) and hit["text"]
        assert isinstance(hit["score"], float) and all(isinstance(p, int) for p in hit["pages"])
    assert any(HOLD_PAGE in h["pages"] for h in hits[:3]), [h["pages"] for h in hits]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    three = cli.json("search", HOLD_QUESTION, "--collection", "faq", "--k", "3")
    assert isinstance(three, list) and len(three) == 3
    assert [h["pages"] for h in three] == [h["pages"] for h in hits[:3]]


def test_search_plain_text(cli: Cli) -> None:
    code, out, err = cli.run("search", "gnash and swfdec", "--collection", "faq", "--k", "2")
    assert code == 0, err
    assert out.startswith(f"1. {FAQ_NAME}, p. 28") and "\n2. " in out
    assert "3. " not in out


def test_ask_json_cites_the_page(cli: Cli) -> None:
    question, page = GOOGLE_EARTH
    payload = cli.json("ask", question, "--collection", "faq", "--temperature", "0", "--seed", "0")
    assert isinstance(payload, dict) and payload.keys() >= ASK_KEYS, payload
    assert isinstance(payload["answer"], str) and payload["answer"].strip()
    assert payload["declined"] is False
    sources = payload["sources"]
    assert sources and [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    for s in sources:
        assert s.keys() >= SOURCE_KEYS, s
        assert s["file"] == FAQ_NAME and s["text"] and isinstance(s["score"], float)
    assert page in [s["page"] for s in sources], [s["page"] for s in sources]
    # what the user sees is checked: each cited source holds a span that supports the answer
    assert payload["outcome"] in ("answered", "quoted"), payload
    assert isinstance(payload["attribution"], list) and isinstance(payload["model_answer"], str)
    cited = [s for s in sources if s["cited"]]
    assert cited and all(s["spans"] for s in cited), sources
    if payload["outcome"] == "answered":
        attributed = {a["source"] for a in payload["attribution"] if a["source"]}
        assert attributed == {s["n"] for s in cited}


def test_ask_out_of_corpus_declines(cli: Cli) -> None:
    payload = cli.json("ask", OUT_OF_CORPUS, "--collection", "faq")
    assert isinstance(payload, dict)
    assert payload["answer"].startswith(REFUSAL), payload["answer"]
    assert "“Australia”" in payload["answer"], "the decline names what the documents never mention"
    assert payload["unknown_words"] == ["Australia"]
    assert payload["sources"] == [] and payload["declined"] is True


def test_eval_retrieval(cli: Cli) -> None:
    qa = eval_set()
    scores = cli.json("eval", "retrieval", str(qa), "--collection", "faq")
    assert isinstance(scores, dict) and scores.keys() >= RETRIEVAL_KEYS, scores
    assert scores["questions"] == sum(1 for line in qa.read_text().splitlines() if line.strip())
    assert scores["hit5"] >= 0.85, scores
    assert scores["hit1"] <= scores["hit5"] <= scores["hit10"] <= 1.0
    assert 0.0 < scores["mrr"] <= 1.0 and 0.0 < scores["ndcg10"] <= 1.0
    assert 0.0 < scores["p50_ms"] <= scores["p95_ms"]


def test_eval_answers(cli: Cli, tmp_path: Path) -> None:
    answerable = [
        json.loads(line)
        for line in eval_set().read_text().splitlines()
        if json.loads(line)["question"] in ("Where is a player for Flash (SWF)?", HOLD_QUESTION)
    ]
    assert len(answerable) == 2
    lines = [
        *({"question": q["question"], "doc": q["doc"], "page": q["page"]} for q in answerable),
        {"question": OUT_OF_CORPUS, "doc": None, "page": None},
        {"question": "Who won the 1998 football World Cup final?", "doc": None, "page": None},
    ]
    qa = tmp_path / "tiny.jsonl"
    qa.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    scores = cli.json("eval", "answers", str(qa), "--collection", "faq", timeout=300)
    assert isinstance(scores, dict) and scores.keys() >= ANSWER_KEYS, scores
    assert scores["answerable"] == 2 and scores["unanswerable"] == 2
    assert scores["declined_unanswerable"] == 1.0, scores
    assert scores["source_has_page"] == 1.0, scores
    assert 0.0 < scores["p50_s"] <= scores["p95_s"]


def test_unknown_collection_is_a_clear_error(cli: Cli) -> None:
    for command in (["search", HOLD_QUESTION], ["ask", HOLD_QUESTION]):
        code, out, err = cli.run(*command, "--collection", "nope")
        assert code == 1, (command, out, err)
        assert "error: no collection named 'nope' (collections: faq)" in err, err
        assert out == ""
    code, out, err = cli.run("search", HOLD_QUESTION, "--collection", "nope", "--json")
    assert code == 1
    assert json.loads(out) == {"error": "no collection named 'nope' (collections: faq)"}


def test_malformed_qa_line_is_named(cli: Cli, tmp_path: Path) -> None:
    qa = tmp_path / "bad.jsonl"
    qa.write_text(
        json.dumps({"question": HOLD_QUESTION, "doc": FAQ_NAME, "page": HOLD_PAGE})
        + "\n\n"
        + '{"question": "Where is Google Earth?", "doc": "debian-faq.en.pdf", "page": "28"}\n',
        encoding="utf-8",
    )
    code, out, err = cli.run("eval", "retrieval", str(qa), "--collection", "faq")
    assert code == 1 and out == ""
    assert f"{qa}, line 3: 'page' must be a positive integer, not '28'" in err, err
    qa.write_text("{not json\n", encoding="utf-8")
    code, out, err = cli.run("eval", "answers", str(qa), "--collection", "faq", "--json")
    assert code == 1
    assert json.loads(out)["error"].startswith(f"{qa}, line 1: invalid JSON")
