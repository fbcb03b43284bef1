"""The Fine-tune tab in a real browser (Debian's Chromium, driven by Playwright): a named run's loss
plot draws its lines while the page's first training is still running (issue 14 item 3), and the
tuned model comes back to the Chat tab under the run's name (item 10)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ARTIFACTS, RunningApp
from tests.test_browser import foreign_requests, wait_for_text

pytestmark = pytest.mark.browser

STEPS = 6
# the loss plot's lines: a path with a visible stroke and more than a starting point
DRAWN_WHILE_RUNNING = """() => {
  const running = [...document.querySelectorAll('#ft-status')]
    .some(e => e.innerText.includes('· running ·'));
  const bar = document.querySelector('#train-progress');
  const midway = bar && Number(bar.getAttribute('value')) >= 2
    && Number(bar.getAttribute('value')) < Number(bar.getAttribute('max'));
  const drawn = [...document.querySelectorAll('#ft-loss g.mark-line path')].some(p => {
    const style = getComputedStyle(p);
    return style.stroke !== 'none' && style.strokeOpacity !== '0'
      && (p.getAttribute('d') || '').includes('L');
  });
  return running && midway && drawn;
}"""


def test_the_first_runs_loss_plot_draws_while_training_and_the_name_is_shown(
    page: Any, running_app: RunningApp, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "rivers.jsonl"
    lines = [
        json.dumps({"prompt": f"Which river is number {i}?", "completion": "It is the Ouse."})
        for i in range(8)
    ]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    page.goto(running_app.url)  # a fresh page: its loss plot has never drawn a run
    page.get_by_role("tab", name="Fine-tune").click()
    with page.expect_response(lambda r: "/upload" in r.url and r.ok):
        page.locator("#ft-upload input[type=file]").set_input_files(str(data))
    wait_for_text(page, "ft-summary", "8 examples")
    page.locator("#ft-name textarea, #ft-name input").first.fill("River quiz")
    page.get_by_role("button", name="Training settings").click()
    steps = page.get_by_label("Max steps", exact=True)
    steps.fill(str(STEPS))
    steps.press("Enter")
    rehearsal = page.get_by_label("Rehearsal", exact=False)
    rehearsal.fill("0")
    rehearsal.press("Enter")
    page.locator("#ft-train").click()

    wait_for_text(page, "ft-status", "River quiz")
    page.wait_for_function(DRAWN_WHILE_RUNNING, polling=200, timeout=240_000)
    page.screenshot(path=str(ARTIFACTS / "finetune-running.png"), full_page=True)

    wait_for_text(page, "ft-status", "· done ·", timeout_ms=300_000)
    wait_for_text(page, "ft-runs", "River quiz")
    status = page.locator("#ft-status").first.inner_text()
    assert "River-quiz.lora.gguf" in status, status
    page.get_by_role("tab", name="Chat").click()
    page.locator("#model input").click()
    page.get_by_role("option", name="River-quiz.lora.gguf").first.wait_for()
    assert [p.name for p in running_app.models_dir.glob("*--River-quiz.lora.gguf")], status
    assert foreign_requests(page.requested) == []
