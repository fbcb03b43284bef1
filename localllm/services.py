"""The heavy objects of a running app, built once at start and handed to the UI and CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from localllm.config import Settings
from localllm.llm.manager import ModelManager


@dataclass
class Services:
    settings: Settings
    models: ModelManager = field(init=False)

    def __post_init__(self) -> None:
        self.models = ModelManager(self.settings)

    def close(self) -> None:
        self.models.close()
