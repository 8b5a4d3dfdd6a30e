"""`make bench PROFILE=smoke`: a few steps of every benchmark part, so the benchmark cannot rot."""

import csv
import os
import subprocess

import pytest
from conftest import REPO, TINY, ensure_forkserver

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast


def test_make_bench_runs_the_profile_into_the_folder():
    def make_bench(*args):
        result = subprocess.run(["make", "-n", "-s", "-C", REPO, "bench", *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[-1]

    assert make_bench("PROFILE=smoke", "BENCH_OUT=/x/y").endswith("scripts/bench.py --profile smoke --out /x/y")
    # without BENCH_OUT each profile writes to its own default: a seeded profile reads and extends its
    # committed cache (docs/<profile>_bench/runs), not an empty bench/results/<profile>/runs
    assert make_bench("PROFILE=real").endswith("scripts/bench.py --profile real")
    assert make_bench().endswith("scripts/bench.py --profile quick")


def test_bench_smoke_profile(tmp_path, forked_bench_runs, capsys):
    """``make bench PROFILE=smoke`` (its training runs in forks of the tests' server)."""
    import bench

    ensure_forkserver()  # the exchange timing's ranks fork from it: torch imported with one thread

    out = tmp_path / "smoke"
    assert bench.main(["--profile", "smoke", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "## Time to accuracy" in stdout and "## Step overhead" in stdout and "## History store" in stdout
    for name in (
        "results.md",
        "time_to_accuracy.csv",
        "audit.csv",
        "step_overhead.csv",
        "history_store.csv",
        "rsum_vs_time_learning.png",
        "kept_precision_learning.png",
        "distributions_learning_dissect-mome.png",
    ):
        assert os.path.getsize(out / name) > 0, name
    with open(out / "time_to_accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["strategy"] for r in rows} == {"none", "dissect-mome", "learnability", "infobatch"}
    assert next(r for r in rows if r["strategy"] == "infobatch")["ratio"] == "own"
    assert "frozen reference trained on clean pairs" in stdout  # learnability got its reference
    full = next(r for r in rows if r["strategy"] == "none")
    assert float(full["speedup"]) == 1.0  # the full-data run reaches its own final R@sum
    with open(out / "step_overhead.csv") as f:
        overhead = list(csv.DictReader(f))
    assert [float(r["ratio"]) for r in overhead] == [0.3, 0.5, 0.7]
    assert all(float(r["selection_step"]) > 0 and float(r["random_step"]) > 0 for r in overhead)
    assert tuple(overhead[0]) == bench.OVERHEAD_COLUMNS and "" not in overhead[0].values()


def test_paper_profile_on_a_tiny_design(tmp_path, forked_bench_runs):
    """The paper profile's whole path (data per seed, runs, cache, paired statistics, Fig. 3)
    on a design small enough for the test suite; an auto run that never leaves its warm-up is
    the random run of its seed, decision for decision."""
    from benchmarks import cli
    from benchmarks.profiles.paper import METHODS, PAPER

    cfg = dict(PAPER, seeds=(0, 1), parallel=1, model=TINY)
    cfg["methods"] = {
        **METHODS,
        "dissect-warmup-auto": (
            "dissect-warmup",
            ["--dissect-warmup-epochs", "auto", "--dissect-auto-signal", "retrieval", "--dissect-auto-patience", "5"],
        ),
    }
    cfg["regimes"] = {
        "memorising-shuffle": dict(
            train=128,
            test=16,
            val=16,
            epochs=2,
            batch=32,
            val_every=1,
            noise="shuffle",
            methods=("full", "random", "dissect-warmup-auto"),
        )
    }
    assert cli.run_paper(str(tmp_path), cfg) == 0
    text = (tmp_path / "results.md").read_text()
    assert "## memorising-shuffle" in text and "Full data: peak R@sum" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["random"].split(" | ")[3] == "0.0 ± 0.0"  # random against itself
    assert rows["dissect-warmup-auto (retrieval)"].split(" | ")[3] == "0.0 ± 0.0"  # never switched
    for name in ("fig3_memorising-shuffle.png", "curves_memorising-shuffle.png", "summary.json"):
        assert os.path.getsize(tmp_path / name) > 0, name
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert len(runs) == 6 and not os.listdir(tmp_path / "logs")  # run folders are dropped once cached
    assert cli.run_paper(str(tmp_path), cfg, report_only=True) == 0  # from the cache alone
