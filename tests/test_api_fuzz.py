"""A small sample of what bench/robust_api.py fuzzes in hundreds: schemathesis cases (valid and
invalid) from the /v1 router's own OpenAPI schema, sent to the running app. None may get a 5xx or
no answer, and every 4xx must be an OpenAI error object."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import RunningApp

sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))
from robust_api import fuzz_schema


def test_fuzzed_requests_get_no_5xx_and_only_error_objects(running_app: RunningApp) -> None:
    result = fuzz_schema(running_app.url.rstrip("/"), examples=4, derandomize=True)
    assert result["tried"] >= 12, result["figures"]
    assert result["failures"] == []
