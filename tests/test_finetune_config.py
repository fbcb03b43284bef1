"""A run's config, typed: the user's settings checked with reasons they can act on, and config.json
files of older runs still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localllm.finetune.run_files import read_config
from localllm.finetune.train_config import DEFAULTS, TrainConfigError, check_config, check_hyper


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ({"rank": 0}, "rank must be a positive number, not 0"),
        ({"learning_rate": "fast"}, "learning_rate must be a positive number, not 'fast'"),
        ({"method": "ppo"}, "method 'ppo' is not supported (choose qlora, lora or dpo)"),
        ({"bf16": "maybe"}, "bf16 must be one of auto, on, off, not 'maybe'"),
        ({"warp": 9}, "unknown setting 'warp'"),
        ({"max_steps": 0}, "give max_steps or epochs"),
        ({"rehearsal": 9}, "rehearsal: Input should be less than or equal to 4, not 9"),
        ({"target_modules": []}, "target_modules: List should have at least 1 item"),
        ({"threads": -1}, "threads: Input should be greater than or equal to 0, not -1"),
    ],
)
def test_a_bad_setting_is_refused_by_name(given: dict[str, object], reason: str) -> None:
    with pytest.raises(
        TrainConfigError, match="^" + reason.replace("(", r"\(").replace(")", r"\)")
    ):
        check_hyper(given)


def test_settings_left_unset_take_the_defaults() -> None:
    chosen = check_hyper({"rank": 8, "learning_rate": None, "epochs": 2})
    assert chosen.rank == 8 and chosen.learning_rate == DEFAULTS["learning_rate"] == 5e-4
    assert chosen.epochs == 2 and chosen.target_modules == DEFAULTS["target_modules"]


def test_an_older_run_config_still_reads(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"data": "d.jsonl", "base_gguf": "m.gguf", "bf16": True, "rehearsal": None, "x": 1}
        ),
        encoding="utf-8",
    )
    config = read_config(tmp_path)
    assert config.bf16 == "on" and config.rehearsal == 0 and config.rank == DEFAULTS["rank"]
    with pytest.raises(TrainConfigError, match="needs 'base_gguf' or 'base_hf'"):
        check_config({"data": "d.jsonl"})
    with pytest.raises(TrainConfigError, match=r"config\.json needs 'data'"):
        check_config({"base_gguf": "m.gguf"})
