"""`python app.py`: the LocalLLM web app on its bundled defaults (also the Hugging Face Spaces entry)."""

from localllm.config import Settings
from localllm.privacy import apply_privacy


def main() -> None:
    settings = Settings()
    apply_privacy(settings)
    from localllm.ui import launch

    launch(settings)


if __name__ == "__main__":
    main()
