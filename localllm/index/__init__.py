"""Embeddings, the vector store and search over the chunks of indexed documents."""
