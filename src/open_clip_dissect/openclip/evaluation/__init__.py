"""Retrieval on held-out data, CLIP_benchmark evaluation and the results table."""
