"""Fine-tuning: examples (data), the training process, export to GGUF, and the runs that tie them."""
