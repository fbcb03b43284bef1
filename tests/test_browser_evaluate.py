"""The Evaluate tab in a real browser: a question file uploaded, a collection and the bundled model
picked, Compare; the table shows a row with and one without retrieval, and the chart is drawn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ARTIFACTS, RunningApp
from tests.test_browser import foreign_requests, index_file, wait_for_text

pytestmark = pytest.mark.browser

NOTE = "The heron nests by the north pond every spring, and the otter fishes by the weir."
QUESTION = "Where does the heron nest?"
REFERENCE = "The heron nests by the north pond every spring."


def index_note(page: Any, folder: Path, collection: str) -> None:
    notes = folder / "pond notes.md"
    notes.write_text(f"# Pond notes\n\n{NOTE}\n", encoding="utf-8")
    index_file(page, notes, collection)


def test_evaluate_tab_compares_with_and_without_retrieval(
    page: Any,
    running_app: RunningApp,
    tmp_path: Path,
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    qa = tmp_path / "pond.jsonl"
    qa.write_text(json.dumps({"question": QUESTION, "answer": REFERENCE}) + "\n", encoding="utf-8")
    page.goto(running_app.url)
    index_note(page, tmp_path, "ev-pond")
    page.get_by_role("tab", name="Evaluate").click()
    with page.expect_response(lambda r: "/upload" in r.url and r.ok):
        page.locator("#ev-upload input[type=file]").set_input_files(str(qa))
    page.locator("#ev-collection input").click()
    page.get_by_role("option", name="ev-pond", exact=True).click()
    assert "SmolLM2" in page.locator("#ev-models").inner_text()  # the default model, chosen
    page.locator("#ev-run").click()
    wait_for_text(page, "ev-status", "2 rows")
    table = page.locator("#ev-table").inner_text()
    assert "with" in table and "without" in table and "SmolLM2" in table
    page.wait_for_function(
        "() => [...document.querySelectorAll('#ev-chart')].some("
        "c => c.querySelector('canvas, svg.marks, svg'))",
        polling=200,
    )
    page.screenshot(path=str(ARTIFACTS / "evaluate.png"), full_page=True)

    # one mode only: the model answers without the documents, one row
    page.locator("#ev-modes").get_by_label("with retrieval", exact=True).uncheck()
    page.locator("#ev-run").click()
    wait_for_text(page, "ev-status", "1 row over")
    table = page.locator("#ev-table").inner_text()
    assert table.count("SmolLM2") == 1 and "without" in table, table
    assert foreign_requests(page.requested) == []
