"""The Fine-tune tab in a real browser says how many preference pairs the saved chats give, offers
DPO once there are enough, and makes them the dataset in one click (training: test_finetune_dpo)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from localllm.chat.conversations import ConversationStore
from localllm.finetune.preferences import MIN_PAIRS
from localllm.ui.finetune_dpo import DPO_METHOD, DPO_QLORA_METHOD
from tests.conftest import ARTIFACTS, CHROMIUM_ARGS, chromium_path, require, serving
from tests.test_browser import wait_for_text
from tests.test_finetune_dpo import answered

pytestmark = pytest.mark.browser


def memory_mb(estimate: str) -> float:
    """The memory an estimate names ("about 1.2 GB of memory"), in MB."""
    found = re.search(r"about ([\d.]+) (MB|GB) of memory", estimate)
    assert found, estimate
    return float(found[1]) * (1024 if found[2] == "GB" else 1)


def test_the_tab_counts_the_pairs_and_offers_dpo_from_enough(tmp_path: Path):
    exe = chromium_path()
    require(exe is not None, "Debian's chromium is not installed (make browser installs it)")
    from playwright.sync_api import sync_playwright

    saved = tmp_path / "conversations.sqlite3"
    with ConversationStore(saved) as store:
        answered(store, "How do I list files?", "Run `ls`.", 1)
        answered(store, "How do I list files?", "Files are data.", -1)
    (tmp_path / "models").mkdir()
    env = {"LOCALLLM_RUNS_DIR": str(tmp_path / "runs"), "LOCALLLM_EMBED_BACKEND": "torch"}
    with serving(tmp_path, **env) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        try:
            page.goto(url)
            page.get_by_role("tab", name="Fine-tune").click()
            too_few = "1 preference pair from your thumbs and regenerations"
            wait_for_text(page, "ft-pairs", too_few)
            wait_for_text(page, "ft-pairs", f"DPO needs at least {MIN_PAIRS}")
            assert page.get_by_label(DPO_METHOD[0]).count() == 0
            assert not page.locator("#ft-use-pairs").is_visible()

            with ConversationStore(saved) as store:  # more feedback, while the app runs
                answered(store, "How do I install a package on Debian?", "sudo apt install X", 1)
                answered(store, "How can I install a Debian package?", "Packages are software.", -1)
                answered(store, "What is the capital of France?", "Paris.", 1)
                answered(store, "What's France's capital city?", "Berlin.", -1)
                conversation = store.create()
                store.add_message(conversation, "user", "Name a prime number.")
                first = store.add_message(conversation, "assistant", "Nine.")
                store.replace_answer(conversation, first, "Seven.")
            assert MIN_PAIRS == 4  # three thumbs pairs and the regeneration: just enough
            page.reload()
            page.get_by_role("tab", name="Fine-tune").click()
            enough = "4 preference pairs from your thumbs and regenerations"
            wait_for_text(page, "ft-pairs", enough)
            assert not page.get_by_label(DPO_METHOD[0]).is_checked()
            page.locator("#ft-use-pairs").click()
            wait_for_text(page, "ft-summary", enough)
            wait_for_text(page, "ft-preview", "sudo apt install X")
            wait_for_text(page, "ft-preview", "over: Nine.")
            wait_for_text(page, "ft-preview", "“Name a prime number.” · ")  # its conversation
            wait_for_text(page, "ft-estimate", "Estimate: about")
            page.wait_for_function(
                "label => [...document.querySelectorAll('input[type=radio]')].some("
                "i => i.checked && i.closest('label').innerText.includes(label))",
                arg=DPO_METHOD[0],
                polling=200,
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dpo-offer.png"), full_page=True)
            # DPO over a 4-bit base: offered beside it, and its estimate is QLoRA's, leaner
            settled = (
                "() => { const t = document.querySelector('#ft-estimate').innerText;"
                " return /processing|queue/.test(t) ? '' : t.slice(t.indexOf('Estimate:')); }"
            )
            page.wait_for_function(settled, polling=200)
            full = page.evaluate(settled)
            page.get_by_label(DPO_QLORA_METHOD[0]).check()
            page.wait_for_function(
                f"before => {{ const now = ({settled})(); return now && now !== before; }}",
                arg=full,
                polling=200,
            )
            assert memory_mb(page.locator("#ft-estimate").inner_text()) < memory_mb(full)
        finally:
            browser.close()
    (written,) = (tmp_path / "runs" / "datasets").glob("preferences-*.jsonl")
    assert len(written.read_text("utf-8").splitlines()) == 4
