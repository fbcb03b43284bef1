"""Two-step deletes: the first click arms (a red "Confirm delete <name>?" and a Cancel), the second
click deletes; Cancel, or choosing something else, disarms. Nothing is deleted on the first click.

The delete itself runs on the confirm button, so its event (and its api_name, which scripts call)
still deletes in one call; only the person at the page is asked twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.components import Component


@dataclass
class ConfirmDelete:
    ask: gr.Button  # the unarmed button: secondary, not red
    confirm: gr.Button  # shown once armed: red, names what goes
    cancel: gr.Button

    @property
    def buttons(self) -> list[Component]:
        return [self.ask, self.confirm, self.cancel]

    def wire(
        self,
        arm: Callable[..., str | None],
        delete: Callable[..., Any],
        inputs: Sequence[Component],
        outputs: Sequence[Component],
        *,
        api_name: str | bool,
        disarm_on: Sequence[Component] = (),
        **event: Any,
    ) -> None:
        """`arm(*inputs)` names what would be deleted (or raises gr.Error, or returns None to stay
        unarmed); `delete(*inputs)` deletes. A change to any of `disarm_on` disarms."""

        def arming(*values: Any) -> tuple[Any, Any, Any]:
            name = arm(*values)
            if name is None:
                return gr.skip(), gr.skip(), gr.skip()
            return armed(name)

        self.ask.click(arming, list(inputs), self.buttons, api_name=False)
        self.cancel.click(disarmed, None, self.buttons, api_name=False)
        self.confirm.click(delete, list(inputs), list(outputs), api_name=api_name, **event).then(
            disarmed, None, self.buttons, api_name=False
        )
        for component in disarm_on:
            component.change(disarmed, None, self.buttons, api_name=False)  # type: ignore[attr-defined]


def confirm_delete(label: str, elem_id: str, **layout: Any) -> ConfirmDelete:
    """The three buttons, side by side where they are placed; only `label` shows until armed."""
    return ConfirmDelete(
        ask=gr.Button(label, variant="secondary", elem_id=elem_id, **layout),
        confirm=gr.Button(
            f"Confirm {label.lower()}?",
            variant="stop",
            visible=False,
            elem_id=f"{elem_id}-confirm",
            **layout,
        ),
        cancel=gr.Button(
            "Cancel", variant="secondary", visible=False, elem_id=f"{elem_id}-cancel", **layout
        ),
    )


def armed(name: str) -> tuple[Any, Any, Any]:
    return (
        gr.update(visible=False),
        gr.update(value=f"Confirm delete {name}?", visible=True),
        gr.update(visible=True),
    )


def disarmed() -> tuple[Any, Any, Any]:
    return gr.update(visible=True), gr.update(visible=False), gr.update(visible=False)
