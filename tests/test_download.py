from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localllm.config import Settings
from localllm.errors import DownloadError, DownloadsDisabledError
from localllm.llm.catalog import list_models
from localllm.llm.download import clean_staging, download_gguf
from tests.conftest import free_port
from tests.fake_hub import FakeHub, running_fake_hub

REPO = "someone/tiny-gguf"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with running_fake_hub() as fake:
        yield fake


def hub_settings(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"allow_downloads": True, "hub_endpoint": url})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_are_off_unless_opted_in(settings: Settings, hub: FakeHub) -> None:
    with pytest.raises(DownloadsDisabledError, match="LOCALLLM_ALLOW_DOWNLOADS"):
        download_gguf(settings.model_copy(update={"hub_endpoint": hub.url}), REPO, "m.gguf")
    assert hub.requests == [], "no request may leave before the user opts in"


def test_download_lands_in_the_catalog_with_progress(
    settings: Settings, hub: FakeHub, bundled_path: Path
) -> None:
    data = bundled_path.read_bytes()
    hub.files[f"{REPO}/small.gguf"] = data
    seen: list[tuple[int, int | None]] = []
    info = download_gguf(
        hub_settings(settings, hub.url),
        REPO,
        "small.gguf",
        progress=lambda d, t: seen.append((d, t)),
    )
    assert info.ok and info.name == "small.gguf" and info.architecture == "llama"
    assert (settings.models_dir / "small.gguf").read_bytes() == data
    assert "small.gguf" in [m.name for m in list_models(settings)]
    assert leftovers(settings.models_dir) == ["small.gguf"], "no staging files are left behind"
    assert len(seen) > 1 and seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_download_that_breaks_half_way_leaves_nothing(
    settings: Settings, hub: FakeHub, bundled_path: Path
) -> None:
    data = bundled_path.read_bytes()
    key = f"{REPO}/broken.gguf"
    hub.files[key] = data
    hub.cut_at[key] = len(data) // 2
    with pytest.raises(DownloadError, match=r"broken\.gguf failed"):
        download_gguf(hub_settings(settings, hub.url), REPO, "broken.gguf")
    assert leftovers(settings.models_dir) == []


def test_download_of_something_that_is_not_a_gguf(settings: Settings, hub: FakeHub) -> None:
    hub.files[f"{REPO}/fake.gguf"] = b"<html>login required</html>" * 100
    with pytest.raises(DownloadError, match="not a usable GGUF: not a GGUF file"):
        download_gguf(hub_settings(settings, hub.url), REPO, "fake.gguf")
    assert leftovers(settings.models_dir) == []


def test_missing_file_on_the_hub(settings: Settings, hub: FakeHub) -> None:
    with pytest.raises(DownloadError, match=r"(has no file|not found|404)"):
        download_gguf(hub_settings(settings, hub.url), REPO, "absent.gguf")
    assert leftovers(settings.models_dir) == []


def test_unreachable_hub_is_a_clear_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DownloadError, match="could not reach the Hub"):
        download_gguf(hub_settings(settings, closed), REPO, "m.gguf")
    assert leftovers(settings.models_dir) == []


@pytest.mark.parametrize(
    ("repo", "name"), [("no-slash", "m.gguf"), (REPO, "../evil.gguf"), (REPO, "notes.txt")]
)
def test_bad_names_are_refused_before_any_request(
    settings: Settings, hub: FakeHub, repo: str, name: str
) -> None:
    with pytest.raises(DownloadError):
        download_gguf(hub_settings(settings, hub.url), repo, name)
    assert hub.requests == []


def test_existing_file_is_not_overwritten(settings: Settings, hub: FakeHub) -> None:
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / "mine.gguf").write_bytes(b"precious")
    with pytest.raises(DownloadError, match="already in the models folder"):
        download_gguf(hub_settings(settings, hub.url), REPO, "mine.gguf")
    assert (settings.models_dir / "mine.gguf").read_bytes() == b"precious"


def test_staging_left_by_a_killed_download_is_cleaned(settings: Settings) -> None:
    stale = settings.models_dir / ".download-deadbeef"
    stale.mkdir(parents=True)
    (stale / "model.gguf.incomplete").write_bytes(b"x")
    assert clean_staging(settings) == 1
    assert leftovers(settings.models_dir) == []
