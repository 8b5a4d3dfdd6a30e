"""A strategy needs its own file and its test only: the registry feeds --selection's choices and
help, the flags, the validation, the README's table and the training run."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, TINY_TRAIN_FLAGS, read_jsonl, run_module

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast

THROWAWAY = """
import torch

from open_clip_dissect.core.strategies.base import Strategy
from open_clip_dissect.core.strategies.registry import Option, in_range, register


@register
class Throwaway(Strategy):
    name = "throwaway"
    summary = "the k highest CLIPScores above --throwaway-floor (a test's strategy)"
    options = (Option("floor", "--throwaway-floor", float, 5.0, "CLIPScore below which a pair ranks last",
                      in_range(0.0, 100.0)),)

    def __init__(self, floor=5.0):
        self.floor = floor

    def rank(self, scores, history, epoch, generator):
        return (scores.curr - self.floor).clamp_min(0)
"""


def test_the_readme_strategy_table_is_the_registry():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "update_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_a_strategy_file_alone_adds_a_strategy(tmp_path, tiny_data):
    """A throwaway strategy dropped into a copy of the package: --help lists it and its flag, a
    bad value of its flag is refused in one line, and a run trains with it."""
    package = tmp_path / "open_clip_dissect"
    shutil.copytree(
        os.path.join(REPO, "src", "open_clip_dissect"), package, ignore=shutil.ignore_patterns("__pycache__")
    )
    (package / "core" / "strategies" / "throwaway.py").write_text(THROWAWAY)
    env = {"PYTHONPATH": str(tmp_path)}
    helped = run_module("open_clip_dissect.main", ["--help"], env=env)
    assert helped.returncode == 0 and "throwaway: the k highest CLIPScores above" in " ".join(helped.stdout.split())
    assert "--throwaway-floor" in helped.stdout
    refused = run_module("open_clip_dissect.main", ["--selection", "throwaway", "--throwaway-floor", "-1"], env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("open_clip_dissect: error: --throwaway-floor: must be")
    trained = run_module(
        "open_clip_dissect.main",
        [
            *TINY_TRAIN_FLAGS,
            "--train-data",
            tiny_data.train,
            "--dataset-type",
            "webdataset",
            "--workers",
            "1",
            "--logs",
            str(tmp_path / "logs"),
            "--name",
            "run",
            "--epochs",
            "1",
            "--selection",
            "throwaway",
            "--ratio",
            "0.25",
            "--train-num-samples",
            "128",
        ],
        env=env,
    )
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    summary = read_jsonl(tmp_path / "logs" / "run" / "selection.jsonl")[0]
    assert summary["selection"] == "throwaway" and summary["kept"] == 32  # a quarter of 4 batches of 32
    # and nothing of it leaked into the repository's own package
    assert not os.path.exists(os.path.join(REPO, "src", "open_clip_dissect", "core", "strategies", "throwaway.py"))
