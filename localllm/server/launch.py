"""The running app: the Gradio page and the OpenAI-compatible API on one server, its queue, login."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware

from localllm.config import Settings
from localllm.llm.download import clean_staging
from localllm.server.auth import AuthStore, is_local
from localllm.server.openai_api import build_router
from localllm.server.signin import SignInGate
from localllm.server.spaces import SESSION_CAPACITY, on_spaces, prepare_space
from localllm.services import Services
from localllm.ui.app import THEME, build_app
from localllm.ui.layout import CSS

log = logging.getLogger(__name__)


def launch(
    settings: Settings, *, host: str | None = None, port: int | None = None, block: bool = True
) -> tuple[Any, Services]:
    services = Services(settings)
    clean_staging(settings)  # what a download killed mid-way left in the models folder
    spaces = on_spaces()
    if spaces:
        prepare_space(services, Path(__file__).resolve().parents[2])
    demo = build_app(services)
    demo.queue(default_concurrency_limit=1)
    kwargs: dict[str, Any] = {
        "server_name": host or settings.host,
        "server_port": port or settings.port,
        "theme": THEME,
        "css": CSS,
        "show_error": True,
        "prevent_thread_lock": True,
        "footer_links": ["api", "settings"],
        "max_file_size": f"{settings.max_upload_mb}mb",
    }
    if spaces:
        kwargs["state_session_capacity"] = SESSION_CAPACITY
    access = AuthStore(settings.auth_path)
    if access.enabled:

        async def check_user(name: str, password: str) -> bool:
            # scrypt takes a while: off the event loop that serves everyone else's page
            return await asyncio.to_thread(access.check_user, name, password)

        kwargs["auth"] = check_user
        kwargs["auth_message"] = "LocalLLM: sign in"
        kwargs["app_kwargs"] = {"middleware": [Middleware(SignInGate)]}
        if not access.users():
            log.warning("API keys are set but no UI user: add one with `localllm auth add-user`")
    elif not is_local(kwargs["server_name"]):
        log.warning(
            "LocalLLM is listening on %s with no login: anyone who can reach this address can "
            "read your documents and use the model. Add a user and an API key with "
            "`localllm auth add-user NAME` and `localllm auth add-key NAME`.",
            kwargs["server_name"],
        )
    demo.launch(**kwargs)
    demo.app.include_router(build_router(services))
    if block:
        demo.block_thread()
    return demo, services
