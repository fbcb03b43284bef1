"""The running server: the Gradio page and the OpenAI-compatible API, login, Spaces mode."""
