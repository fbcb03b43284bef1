"""LocalLLM: private, offline chat with GGUF models, grounded in your own documents."""

__version__ = "0.1.0"
