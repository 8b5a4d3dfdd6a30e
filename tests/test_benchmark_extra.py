"""Without the ``eval`` extra the plain install still works and names the extra to install (kept
out of test_benchmark_eval.py, which is skipped when clip_benchmark is missing)."""

import sys

import pytest

from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.evaluation import benchmark_eval

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast


def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "clip_benchmark", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "clip_benchmark.metrics", None)
    with pytest.raises(InputError, match=r"--benchmark: .*pip install 'open_clip_dissect\[eval\]'"):
        benchmark_eval.require_clip_benchmark("--benchmark")
