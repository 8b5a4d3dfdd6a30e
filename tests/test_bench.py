"""`make bench PROFILE=smoke`: a few steps of every benchmark part, so the benchmark cannot rot."""
import csv
import os
import subprocess

from conftest import REPO


def test_bench_smoke_profile(tmp_path):
    out = tmp_path / "smoke"
    result = subprocess.run(["make", "-s", "-C", REPO, "bench", "PROFILE=smoke", f"BENCH_OUT={out}"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "## Time to accuracy" in result.stdout and "## Step overhead" in result.stdout
    assert "## History store" in result.stdout
    for name in ("results.md", "time_to_accuracy.csv", "audit.csv", "step_overhead.csv", "history_store.csv",
                 "rsum_vs_time_learning.png", "kept_precision_learning.png",
                 "distributions_learning_dissect-mome.png"):
        assert os.path.getsize(out / name) > 0, name
    with open(out / "time_to_accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["strategy"] for r in rows} == {"none", "random", "dissect-mome", "learnability", "infobatch"}
    assert next(r for r in rows if r["strategy"] == "infobatch")["ratio"] == "own"
    assert "frozen reference trained on clean pairs" in result.stdout  # learnability got its reference
    full = next(r for r in rows if r["strategy"] == "none")
    assert float(full["speedup"]) == 1.0  # the full-data run reaches its own final R@sum
    with open(out / "step_overhead.csv") as f:
        overhead = list(csv.DictReader(f))
    assert [float(r["ratio"]) for r in overhead] == [0.3, 0.5, 0.7]
    assert all(float(r["selection_step"]) > 0 for r in overhead)
