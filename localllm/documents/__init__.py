"""Files -> elements -> chunks, each carrying the provenance every answer cites."""
