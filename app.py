"""`python app.py`: the LocalLLM web app on its bundled defaults (also the Hugging Face Spaces entry)."""

from localllm.config import Settings
from localllm.privacy import apply_privacy
from localllm.server.spaces import on_spaces, spaces_settings


def main() -> None:
    settings = Settings()
    if on_spaces():
        settings = spaces_settings(settings)
    apply_privacy(settings)
    from localllm.server.launch import launch

    launch(settings)


if __name__ == "__main__":
    main()
