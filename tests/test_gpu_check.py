"""``make gpu-check`` (scripts/gpu_check.py) on a machine without CUDA, and its verdict lines."""

import io
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "scripts"))
import gpu_check  # noqa: E402

SCRIPT = os.path.join(REPO, "scripts", "gpu_check.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path")
def test_without_cuda_one_line_and_exit_status_5():
    result = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == gpu_check.NO_CUDA == 5
    assert result.stdout.splitlines() == [
        "gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing checked (exit status 5)"
    ]
    assert "Traceback" not in result.stderr and result.stderr.strip() == ""
    with open(os.path.join(REPO, "Makefile")) as f:
        assert "\t$(PY) scripts/gpu_check.py\n" in f.read()


@pytest.mark.slow
def test_verdicts_pass_fail_timeout_and_budget():
    out = io.StringIO()
    verdicts = gpu_check.Verdicts(budget=60, out=out, shortest=1)
    ok = verdicts.run("ok", [sys.executable, "-c", "print('fine')"], 30)
    assert ok.stdout == "fine\n" and not verdicts.lines
    assert verdicts.run("bad", [sys.executable, "-c", "import sys; sys.exit('broken thing')"], 30) is None
    assert verdicts.run("slow", [sys.executable, "-c", "import time; time.sleep(30)"], 2) is None
    verdicts.deadline = 0  # the budget is spent
    assert verdicts.run("late", [sys.executable, "-c", "pass"], 30) is None
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("FAIL bad: exit 1 after") and lines[0].endswith("broken thing")
    assert lines[1].startswith("FAIL slow: timed out after 2 s")
    assert lines[2].startswith("SKIP late: out of time") and verdicts.failed()


def test_a_training_check_reads_the_runs_summary_loss_and_plot(tmp_path):
    run = tmp_path / "amp"
    (run / "records").mkdir(parents=True)
    (run / "selection.jsonl").write_text(
        '{"candidates": 2048, "kept": 1024, "time_scoring": 1.0, "time_training": 3.0}\n'
    )
    (run / "out.log").write_text("Contrastive_loss: 4.1 (4.1) \nContrastive_loss: 3.9 (4.0)\n")
    out = io.StringIO()
    verdicts = gpu_check.Verdicts(budget=60, out=out)
    gpu_check.check_run(verdicts, "amp", [sys.executable, "-c", "pass"], str(tmp_path), "amp", 30)
    assert out.getvalue().startswith("FAIL amp: no ") and "distributions.png" in out.getvalue()
    (run / "records" / "distributions.png").write_bytes(b"")
    gpu_check.check_run(verdicts, "amp", [sys.executable, "-c", "pass"], str(tmp_path), "amp", 30)
    assert verdicts.lines[-1].startswith("PASS amp: ") and "last loss 3.900, scoring share 25%" in verdicts.lines[-1]
    (run / "out.log").write_text("Contrastive_loss: nan (nan)\n")
    gpu_check.check_run(verdicts, "amp", [sys.executable, "-c", "pass"], str(tmp_path), "amp", 30)
    assert verdicts.lines[-1].startswith("FAIL amp: non-finite")


def test_the_step_time_table_reads_what_the_overhead_bench_writes(tmp_path, monkeypatch):
    """bench_table on a step_overhead.csv with bench.py's columns (the GPU run is not here)."""
    import csv

    import bench

    row = dict(device="cuda", batch=512, ratio=0.5, k=256, stock_step=0.2, scoring_pass=0.05)
    row.update(train_step_k=0.1, selection_step=0.16, overhead_over_floor=1.07, vs_stock=0.8)
    row.update(random_step=0.11, random_over_k=1.1, random_vs_stock=0.55)
    assert set(row) == set(bench.OVERHEAD_COLUMNS)  # the columns bench.step_overhead writes

    def fake_run(check, cmd, timeout, env=None, cwd=None):
        out = cmd[cmd.index("--out") + 1]
        os.makedirs(out)
        with open(os.path.join(out, "step_overhead.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerow(row)
        return True

    out = io.StringIO()
    verdicts = gpu_check.Verdicts(budget=60, out=out)
    monkeypatch.setattr(verdicts, "run", fake_run)
    table = gpu_check.bench_table(verdicts, str(tmp_path))
    assert out.getvalue().startswith("WARN bench-step-times: selection step / (scoring + train on k) <= 1.070")
    assert table[-1] == "| 512 | 0.5 | 0.2000 | 0.0500 | 0.1000 | 0.1600 | 1.070 | 0.800 | 0.1100 | 0.550 |"


def test_the_determinism_check_compares_two_runs_bits_and_times_them(tmp_path, monkeypatch):
    """The runs are stood in for by files (the check's commands do nothing here): equal weights
    PASS with the epoch-time ratio against the plain amp run; a differing tensor WARNs, naming it."""
    for name, seconds in (("amp", 4.0), ("det1", 5.0), ("det2", 5.0)):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "selection.jsonl").write_text(f'{{"time_scoring": 1.0, "time_training": {seconds - 1}}}\n')
    weights = {"a": torch.ones(3), "b": torch.zeros(2)}
    for name in ("det1", "det2"):
        torch.save({"state_dict": weights}, tmp_path / name / "checkpoints" / "epoch_1.pt")
    monkeypatch.setattr(gpu_check, "train_flags", lambda *a, **k: ["-c", "pass"])
    verdicts = gpu_check.Verdicts(budget=60, out=io.StringIO())
    gpu_check.determinism_check(verdicts, [sys.executable], {}, str(tmp_path))
    assert (
        verdicts.lines[-1]
        == "PASS deterministic: two runs bit-identical; epoch 5.0 s against 4.0 s without the flag (1.25x)"
    )
    torch.save({"state_dict": dict(weights, b=torch.ones(2))}, tmp_path / "det2" / "checkpoints" / "epoch_1.pt")
    gpu_check.determinism_check(verdicts, [sys.executable], {}, str(tmp_path))
    assert verdicts.lines[-1].startswith("WARN deterministic: two runs differ (first in b)")
