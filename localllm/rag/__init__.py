"""Grounded answers: prompts fitted to the context window, citations, refusals."""
