"""Offline curation: a frozen model's embeddings, oracle scores and keep-lists."""
