"""Errors the user sees: each says what went wrong and what to do about it."""


class LocalLLMError(Exception):
    """Base for errors that carry a message fit to show a user as is."""


class ModelNotFoundError(LocalLLMError):
    pass


class ModelLoadError(LocalLLMError):
    pass


class PromptTooLongError(LocalLLMError):
    pass


class ModelBusyError(LocalLLMError):
    """The model is answering others and this request waited its limit (or found the queue full)."""


class DownloadError(LocalLLMError):
    pass


class DownloadsDisabledError(DownloadError):
    pass


class RemoteModelError(LocalLLMError):
    """The OpenAI-compatible server of `llm_url` is unreachable, refused us, or failed mid-answer."""


class StoreError(LocalLLMError):
    """The document store can't do what was asked; the message says why."""


class StoreBusyError(StoreError):
    """Another process holds the store: Chroma breaks when two processes write one folder."""


class DatasetError(LocalLLMError):
    """A dataset that can't be used at all (missing, unreadable, empty); fit to show a user."""
