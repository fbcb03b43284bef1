"""Retrieval evaluation: eval-set loading and ranking metrics."""
