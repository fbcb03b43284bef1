"""The Gradio UI: wiring and display only; everything it does, it asks the core to do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localllm.config import Settings


def launch(settings: Settings, **kwargs: Any) -> None:
    from localllm.ui.app import launch as _launch

    _launch(settings, **kwargs)
