"""Helpers for the browser test of two-step deletes: the first click arms, the second deletes."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from typing import Any


def armed_look(button: Any) -> bool:
    """Whether a Gradio button has the red ("stop") look."""
    return "stop" in (button.get_attribute("class") or "").split()


def confirm_button(page: Any, name: str) -> Any:
    return page.get_by_role("button", name=re.compile(r"^Confirm delete " + re.escape(name)))


def arm(page: Any, label: str, name: str) -> Any:
    """Click a delete button once; check it now asks, in red, naming `name`; return the ask."""
    ask = page.get_by_role("button", name=label, exact=True)
    assert not armed_look(ask), f"{label!r} looks armed before it is clicked"
    ask.click()
    confirm = confirm_button(page, name)
    confirm.wait_for(timeout=30_000)
    ask.wait_for(state="hidden", timeout=30_000)
    assert armed_look(confirm)
    return confirm


def disarmed(page: Any, label: str, name: str) -> None:
    """Wait until the delete button is back, unarmed, and its confirm is gone."""
    page.get_by_role("button", name=label, exact=True).wait_for(timeout=30_000)
    confirm_button(page, name).wait_for(state="hidden", timeout=30_000)


def settle(check: Callable[[], bool], seconds: float = 30) -> bool:
    """Poll `check` until it holds or time runs out; return its last answer."""
    deadline = time.monotonic() + seconds
    while not (ok := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return ok


def listed_options(page: Any, input_selector: str) -> list[str]:
    """Open a dropdown, read its options' text, close it again."""
    page.locator(input_selector).click()
    options = page.get_by_role("option")
    with contextlib.suppress(Exception):  # an empty list has no option to wait for
        options.first.wait_for(timeout=5_000)
    texts = [t.strip() for t in options.all_inner_texts()]
    page.keyboard.press("Escape")
    return texts
