"""The ``web`` profile's design moved, unchanged, to the docstring of
``scripts/benchmarks/profiles/web.py``; it runs with ``python scripts/paper_bench.py --profile web``."""
