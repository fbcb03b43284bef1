"""What a run trains: runs/<id>/config.json, typed and checked in one place (pydantic).

The defaults are chosen on bench/finetune_defaults.py (bench/README.md): 2e-4 on attention alone did
not learn a fact in 60 steps; higher rates or rank without rehearsal made it forget.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from localllm.errors import LocalLLMError
from localllm.finetune.hardware import BF16_CHOICES, bf16_choice

METHODS = ("qlora", "lora", "dpo")  # dpo: LoRA trained on preference pairs (finetune.dpo)
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainConfigError(LocalLLMError):
    """config.json is missing or asks for something we can't do."""


class Hyper(BaseModel):
    """The settings a user may choose (the tab, `localllm finetune` flags)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    method: Literal["qlora", "lora", "dpo"] = "lora"
    rank: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    target_modules: list[str] = Field(default_factory=lambda: list(ALL_LINEAR), min_length=1)
    learning_rate: float = Field(5e-4, gt=0)
    max_steps: int | None = Field(60, ge=0)
    epochs: float | None = Field(None, ge=0)  # used when max_steps is 0 or None
    batch_size: int = Field(4, gt=0)
    max_length: int = Field(256, gt=0)
    seed: int = 0
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(10, ge=1)
    rehearsal: float = Field(
        0.5, ge=0, le=4
    )  # general answers mixed in, per example (forgetting.py)
    threads: int = Field(0, ge=0)  # 0: the cores no other program is busy on (training_threads)
    bf16: Literal["auto", "on", "off"] = (
        "auto"  # autocast where the CPU or GPU computes it natively
    )
    samples: int = Field(3, ge=0)  # held-out prompts answered by base and tuned model after a run
    # Training ends at an evaluation (every save_steps) whose held-out loss is below this: the
    # examples are learnt, and more steps would only make the model forget. 0: train to the end.
    stop_loss: float = Field(0.01, ge=0)
    # DPO: how far the tuned model may move from the base (higher: less); TRL's default
    beta: float = Field(0.1, gt=0)
    # the base loaded in 4 bits (NF4), as QLoRA loads it: for dpo; method qlora always is
    four_bit: bool = False

    @field_validator("bf16", mode="before")
    @classmethod
    def _bf16(cls, value: Any) -> str:
        return bf16_choice(value)  # older runs stored true/false

    @field_validator("rehearsal", mode="before")
    @classmethod
    def _rehearsal(cls, value: Any) -> Any:
        return 0 if value is None else value

    @model_validator(mode="after")
    def _length(self) -> Hyper:
        if not (self.max_steps or self.epochs):
            raise ValueError("give max_steps or epochs (a positive number)")
        if self.four_bit and self.method == "lora":
            raise ValueError("a 4-bit base is method qlora (or dpo with four_bit)")
        return self

    @property
    def quantized(self) -> bool:
        """Whether the base is loaded in 4 bits: QLoRA, or DPO over a 4-bit base."""
        return self.method == "qlora" or self.four_bit


class TrainConfig(Hyper):
    """A run's whole config: the settings, and what jobs.create_run filled in."""

    model_config = ConfigDict(extra="ignore")

    data: str = Field(min_length=1)
    base_gguf: str | None = None
    base_hf: str | None = None
    base_name: str = ""
    data_name: str = ""
    hf_cache: str | None = None
    adapter_gguf: str | None = None
    created: str = ""

    @model_validator(mode="after")
    def _base(self) -> TrainConfig:
        if not (self.base_gguf or self.base_hf):
            raise ValueError("config.json needs 'base_gguf' or 'base_hf' (a path)")
        return self


DEFAULTS: dict[str, Any] = Hyper().model_dump()
# What DPO uses where the user gave nothing; rehearsal is for supervised runs only. Measured on the
# bundled 135M model (10 code-word pairs, batch 4): at 5e-5 the held-out loss fell 0.693 -> 0.025 in
# 20 steps, general perplexity 12.32 -> 12.38; at 5e-4 (batch 2) it was learnt by step 3, but by step
# 10 perplexity was 12.63, a general question was lost, and "I don't know" lost out on every question.
DPO_DEFAULTS: dict[str, Any] = {"learning_rate": 5e-5, "max_steps": 40, "rehearsal": 0}


def explain(error: ValidationError) -> str:
    """A pydantic error as one line a user can act on: which setting, what is wrong, what it was."""
    reasons = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"])
        value = e.get("input")
        if e["type"] == "missing":
            reasons.append(f"config.json needs {where!r}")
        elif e["type"] == "extra_forbidden":
            reasons.append(f"unknown setting {where!r}")
        elif where == "method":
            choices = f"{', '.join(METHODS[:-1])} or {METHODS[-1]}"
            reasons.append(f"method {value!r} is not supported (choose {choices})")
        elif where == "bf16":
            reasons.append(f"bf16 must be one of {', '.join(BF16_CHOICES)}, not {value!r}")
        elif e["type"] in ("greater_than", "int_parsing", "float_parsing", "int_from_float"):
            reasons.append(f"{where} must be a positive number, not {value!r}")
        else:
            message = str(e["msg"]).removeprefix("Value error, ")
            reasons.append(f"{where}: {message}, not {value!r}" if where else message)
    return "; ".join(reasons)


def check_hyper(given: dict[str, Any]) -> Hyper:
    """The user's settings over the defaults, or a TrainConfigError saying which is wrong."""
    chosen = {k: v for k, v in given.items() if v is not None}
    if chosen.get("method") == "dpo":
        chosen = {**DPO_DEFAULTS, **chosen}
    try:
        return Hyper.model_validate(chosen)
    except ValidationError as e:
        raise TrainConfigError(explain(e)) from e


def check_config(config: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig.model_validate(config)
    except ValidationError as e:
        raise TrainConfigError(explain(e)) from e
