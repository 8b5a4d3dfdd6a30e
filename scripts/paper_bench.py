#!/usr/bin/env python
"""``make bench PROFILE=paper|web|real``: the seeded benchmark profiles' command line.

``python scripts/paper_bench.py [--profile paper|web|real] [--report-only] [--only REGIME]
[--calibrate --seed S --json FILE] [--add-replay DIR]``; ``--help`` lists every flag. The
profiles live in ``scripts/benchmarks/`` (its ``__init__`` maps the package); their designs,
fixed before their first results, are the docstrings of ``scripts/benchmarks/profiles/``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
