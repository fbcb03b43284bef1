"""The Gradio UI: Blocks only; everything it does, it asks the core to do."""
