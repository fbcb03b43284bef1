"""Settings: defaults < localllm.toml < LOCALLLM_* environment < values the UI passes in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

BUNDLED_MODEL = "bundled"


def _toml_file() -> Path:
    return Path(os.environ.get("LOCALLLM_CONFIG", "localllm.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOCALLLM_", extra="ignore")

    models_dir: Path = Path("models")
    docs_store: Path = Path("docs_store")
    runs_dir: Path = Path("runs")
    cache_dir: Path = Field(
        Path("cache"), description="Derived files rebuilt on demand (the accelerated embedder)."
    )

    default_model: str = Field(
        BUNDLED_MODEL, description="File name in models_dir, or 'bundled' for the shipped model."
    )
    context_size: int = Field(4096, ge=0, description="Tokens; 0 means the model's own maximum.")
    n_threads: int = Field(0, ge=0, description="Generation threads; 0: all cores but one.")
    n_threads_batch: int = Field(0, ge=0, description="Prompt threads; 0: all cores.")
    n_gpu_layers: int = Field(-1, description="Layers to offload when a GPU backend is built in.")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    repeat_penalty: float = Field(1.1, ge=1.0, le=2.0, description="1.0 turns it off.")
    system_prompt: str = "You are a helpful, concise assistant."

    embedder_path: Path | None = Field(
        None,
        description="A local sentence-transformers folder; None: the bundled all-MiniLM-L6-v2.",
    )
    embed_backend: str = Field("auto", description="auto | torch | an accelerated variant")
    chunk_tokens: int = Field(200, ge=32, le=512, description="Chunk size in embedder tokens.")
    ocr: bool = Field(
        True, description="OCR pages without a text layer, when tesseract is installed."
    )

    search_k: int = Field(10, ge=1, le=100, description="Chunks a search returns.")
    rag_sources: int = Field(
        5,
        ge=1,
        le=20,
        description="Sources given to the model with a question (fewer if they don't fit).",
    )
    rag_min_similarity: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="Below this cosine similarity of the nearest chunk, grounded mode declines "
        "without asking the model.",
    )
    rag_support_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="How well a source must support an answer sentence for the sentence to cite it "
        "(its words in the passage, and meaning); an answer with no supported sentence is declined.",
    )
    rag_quote_threshold: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="When the model's answer has nothing the documents support, a passage that "
        "answers the question this well is quoted instead of declining.",
    )
    rag_lead_threshold: float = Field(
        0.85,
        ge=0.0,
        le=1.01,
        description="A passage that answers the question this closely (an FAQ's own heading) is "
        "quoted even when the model answered from another source or declined; above 1: never.",
    )
    rag_unknown_share: float = Field(
        0.2,
        ge=0.0,
        le=1.01,
        description="Decline, naming them, when at least this share of the question's words "
        "occur in no passage of the collection; above 1: never.",
    )
    rag_unknown_names: bool = Field(
        True,
        description="Decline, naming it, when the question names something (Docker, readxl) "
        "that no passage of the collection mentions.",
    )
    rag_source_order: Literal["best_first", "best_last"] = Field(
        "best_last",
        description="How the sources are laid out in the prompt: the best one first, or last, "
        "next to the question (a small model copies from what it read last).",
    )
    rerank: Literal["off", "llm"] = Field(
        "off", description="llm: the chat model judges the top chunks."
    )
    finetune_bf16: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Fine-tuning precision: bf16 autocast (on), fp32 (off), or bf16 where the CPU "
        "or GPU computes it natively (auto).",
    )
    conversations_path: Path = Field(
        Path("data/conversations.sqlite3"), description="Saved chats and answer feedback."
    )

    chroma_url: str | None = Field(
        None, description="A Chroma server (http://host:8000) instead of the embedded store."
    )
    llm_url: str | None = Field(
        None,
        description="An OpenAI-compatible server (…/v1) that generates instead of llama.cpp here.",
    )
    llm_api_key: str | None = Field(None, description="The key for llm_url, if it needs one.")
    model_wait_seconds: float = Field(
        300.0,
        gt=0,
        description="Longest an answer waits for the model to finish the one before it; then it "
        "is refused as busy (the API: 503 with Retry-After).",
    )
    api_queue: int = Field(
        8,
        ge=0,
        description="API chats held waiting for the model beyond the one it answers; more are "
        "refused at once with 503 and Retry-After.",
    )
    max_upload_mb: int = Field(200, ge=1, description="Largest file the web UI accepts.")
    auth_path: Path = Field(
        Path("data/auth.json"), description="UI users and API keys, hashed; none: no login."
    )

    allow_downloads: bool = Field(
        False, description="Opt in to Hugging Face Hub downloads; off means no network calls."
    )
    hub_endpoint: str | None = Field(None, description="A Hub mirror URL; None means the Hub.")
    host: str | None = Field(None, description="Bind address; None: Gradio's (127.0.0.1).")
    port: int | None = Field(None, ge=1, le=65535, description="None: Gradio's (7860).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_toml_file())
        return (init_settings, env_settings, toml)
