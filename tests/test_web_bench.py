"""The web profile and the measures it reads off the records: calibration, lock-in, rare share."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, TINY

sys.path.insert(0, os.path.join(REPO, "scripts"))
from benchmarks import cli, plan, report, runner, stats  # noqa: E402
from benchmarks import data as bench_data  # noqa: E402
from benchmarks import record_measures as rm  # noqa: E402
from benchmarks.profiles.web import RETIRED, WEB  # noqa: E402

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast


def test_auroc_counts_ties_half():
    assert rm.auroc([3, 4], [1, 2]) == 1.0 and rm.auroc([1, 2], [3, 4]) == 0.0
    assert rm.auroc([1, 1], [1, 1]) == 0.5 and rm.auroc([2, 0], [1]) == 0.5
    assert np.isnan(rm.auroc([], [1]))


def _records(rows):
    frame = pd.DataFrame(
        rows, columns=["sample", "epoch", "curr", "kept", "noisy", "rare", "style", "hard", "noise_kind"]
    )
    return frame


def test_calibration_reads_the_gap_peak_and_the_rare_pairs_of_the_first_quarter():
    rng = np.random.default_rng(0)
    rows = []
    for epoch in range(8):
        lead = 10 - abs(epoch - 5) * 2  # clean lead peaks at epoch 5
        for i in range(200):
            noisy, rare = i < 80, 80 <= i < 100
            curr = rng.normal(20 + (0 if noisy else lead) - (lead if rare and epoch < 2 else 0), 3)
            rows.append((i, epoch, curr, True, noisy, rare, "alt", False, "shuffle" if noisy else None))
    measures = rm.calibration(_records(rows))
    assert measures["gap_peak_epoch"] == 5 and measures["epochs"] == 8 and measures["quarter_epochs"] == 2
    assert measures["auroc_at_gap_peak"] > 0.95
    assert 0.35 < measures["rare_clean_auroc_first_quarter"] < 0.65  # rare clean pairs hide among the noisy
    assert [row["epoch"] for row in measures["table"]] == list(range(8))


def test_lock_in_compares_the_decision_after_kept_and_after_dropped():
    rows = []
    for i in range(100):  # clean pairs keep their first decision forever; noisy ones alternate
        noisy = i >= 50
        for epoch in range(4):
            kept = (epoch + i) % 2 == 0 if noisy else i % 2 == 0
            rows.append((i, epoch, 0.0, kept, noisy, False, "full", False, None))
    rows.append((0, 3, 0.0, True, False, False, "full", False, None))  # a repeat in an epoch is one visit
    out = rm.lock_in(_records(rows), since_epoch=1)
    assert out["visits"] == 100 * 2
    assert out["clean"]["kept_after_kept"] == 1.0 and out["clean"]["kept_after_dropped"] == 0.0
    assert out["noisy"]["kept_after_kept"] == 0.0 and out["noisy"]["kept_after_dropped"] == 1.0
    assert out["clean"]["kept_rate"] == 0.5
    share = rm.rare_kept_share(
        _records(
            [
                (0, 1, 0.0, True, False, True, "alt", False, None),
                (1, 1, 0.0, False, False, True, "alt", False, None),
                (2, 1, 0.0, True, False, False, "alt", False, None),
                (3, 0, 0.0, False, False, True, "alt", False, None),
            ]
        ),
        since_epoch=1,
    )
    assert share == {"rare_clean": 0.5, "clean": pytest.approx(2 / 3)}


def test_the_score_curve_reads_each_epochs_clean_and_noisy_means():
    rows = [
        (i, epoch, (30.0 if i < 3 else 10.0) + epoch, True, i >= 3, False, "full", False, None)
        for epoch in range(3)
        for i in range(5)
    ]
    rows.append((4, 2, 50.0, True, True, False, "full", False, None))  # a noisy pair above every clean one
    curve = rm.score_curve(_records(rows))
    assert [r["epoch"] for r in curve] == [0, 1, 2]
    assert curve[0] == {"epoch": 0, "clean": 30.0, "noisy": 10.0, "auroc": 1.0}
    assert curve[2]["noisy"] == pytest.approx((12 + 12 + 50) / 3) and curve[2]["auroc"] == pytest.approx(2 / 3)


def test_the_delta_replay_follows_both_histories_on_recorded_scores():
    # clean pairs (0, 1) rise early and plateau, noisy ones (2, 3) rise late; pair 3 misses epoch 1
    scores = {0: (10, 20, 25, 26), 1: (10, 20, 25, 26), 2: (5, 8, 15, 30), 3: (5, None, 15, 30)}
    rows = [
        (i, epoch, float(v), True, i >= 2, False, "alt", False, None)
        for i, values in scores.items()
        for epoch, v in enumerate(values)
        if v is not None
    ]
    rows.append((2, 2, 99.0, True, True, False, "alt", False, None))  # a repeat in an epoch: its first visit counts
    replay = rm.delta_replay(_records(rows), warmup_epochs=2, momentum=0.5)
    assert [r["epoch"] for r in replay] == [0, 1, 2, 3] and "warmup_auroc" not in replay[1]
    # warm-up: each pair's last visit before epoch 2 (pair 3: epoch 0's 5)
    assert replay[2]["warmup_gap"] == pytest.approx(-5 - (-7 - 10) / 2) and replay[2]["warmup_auroc"] == 1.0
    assert replay[3]["warmup_gap"] == pytest.approx(-6 - (-22 - 25) / 2)
    # moving average: 0 at a first visit; pair 3 keeps its history (5) through the missed epoch
    assert replay[0] == {"epoch": 0, "mome_auroc": 0.5, "mome_gap": 0.0}
    assert replay[1]["mome_gap"] == pytest.approx(-10 - (-3)) and replay[1]["mome_auroc"] == 0.0
    # epoch 2: clean 15 - 25; noisy 6.5 - 15 and 5 - 15 (a tie with the clean pairs counts half)
    assert replay[2]["mome_gap"] == pytest.approx(-10 - (-8.5 - 10) / 2) and replay[2]["mome_auroc"] == 0.25
    # the default beta is dissect-mome's own
    assert rm.momentum_default() == 0.9


def test_data_cache_is_keyed_by_the_generator_arguments(tmp_path):
    a = bench_data.data_arguments(train=40, test=8, seed=0, val=4)
    b = bench_data.data_arguments(train=40, test=8, seed=0, val=4, noise_rate=0.2)
    c = bench_data.data_arguments(train=40, test=8, seed=0, val=4, preset="web")
    assert len({bench_data.data_digest(x) for x in (a, b, c)}) == 3
    first = bench_data.make_data(str(tmp_path), "x", a)
    again = bench_data.make_data(str(tmp_path), "x", a)
    other = bench_data.make_data(str(tmp_path), "x", b)
    assert first == again and first["splits"]["train"]["pattern"] != other["splits"]["train"]["pattern"]
    assert c["difficulty"]["alt_text_rate"] == 0.6 and c["noise_kind"] == "shuffle"


def test_run_command_counts_the_cpu_of_the_run_and_of_the_workers_it_waited_for():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    child = burn + "import subprocess, sys\nsubprocess.run([sys.executable, '-c', {!r}], check=True)\nprint('done')"
    result = bench_data.run_command([sys.executable, "-c", child.format(burn)], dict(os.environ))
    assert result.returncode == 0 and result.stdout == "done\n" and result.cpu_seconds >= 0.6
    failed = bench_data.run_command([sys.executable, "-c", "import sys; sys.exit('no data')"], dict(os.environ))
    assert failed.returncode == 1 and "no data" in failed.stderr
    with pytest.raises(RuntimeError, match="web-x failed"):
        bench_data.run_training("web-x", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))


def test_a_retired_method_runs_from_the_cache_only(tmp_path):
    """The product dropped dissect-mome-matched: its cached runs still count, the others are
    skipped with a line that names the commit able to run them."""
    from open_clip_dissect.core.strategies import list_strategies

    assert "dissect-mome-matched" in RETIRED and "dissect-mome-matched" not in list_strategies()
    regime = dict(WEB["regimes"]["memorising-shuffle"], seeds=(0, 1))
    todo = plan.jobs(dict(WEB, regimes={"memorising-shuffle": regime}))
    (tmp_path / "memorising-shuffle-dissect-mome-matched-r0.5-s0.json").write_text("{}")
    kept, note = runner.without_retired(todo, str(tmp_path), RETIRED)
    assert ("memorising-shuffle", "dissect-mome-matched", 0.5, 0) in kept
    assert ("memorising-shuffle", "dissect-mome-matched", 0.5, 1) not in kept and len(kept) == len(todo) - 1
    assert "1 runs skipped: dissect-mome-matched" in note and RETIRED["dissect-mome-matched"] in note
    assert runner.without_retired([j for j in todo if j[1] == "random"], str(tmp_path), RETIRED)[1] is None


def test_a_share_measured_on_fewer_seeds_says_how_many():
    assert report.share_cell((0.5, 0.1, 3), 5) == "0.500 ± 0.100 (3 of 5)"
    assert report.share_cell((0.5, 0.1, 5), 5) == "0.500 ± 0.100"
    assert report.share_cell((None, None, 0), 5) == "-"


def test_web_profile_on_a_tiny_design(tmp_path, forked_bench_runs):
    """The web profile's whole path (preset data per seed, runs at two ratios, records summarised
    into the cache, paired statistics against random and the best baseline, calibration table,
    plots) on a design small enough for the test suite; the calibration command writes its JSON."""
    regime = dict(
        data=dict(preset="web", train=96, val=16, test=16),
        batch=32,
        epochs=3,  # lock-in needs two visits after the first epoch
        val_every=1,
        warmup=2,
        ratios=(0.5,),
        seeds=(0, 1),
        main=True,
        methods=("full", "random", "infobatch", "dissect-warmup-auto"),  # infobatch: a baseline without --ratio
    )
    cfg = dict(WEB, regimes={"web-memorising": regime}, parallel=1, model=TINY)
    out, cache, root = tmp_path / "out", tmp_path / "cache", tmp_path / "root"
    assert cli.run_profile("web", str(out), cache=str(cache), root=str(root), cfg=cfg) == 0
    text = (out / "results.md").read_text()
    assert "## web-memorising" in text and "### r = 0.5" in text and "Full data (2 seeds)" in text
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in text.splitlines()
        if line.startswith("| ") and " | 2 | " in line
    }
    assert set(rows) >= {"full", "random", "infobatch", "dissect-warmup-auto"}
    assert rows["random"][3] == "-"  # no difference of random to itself
    assert "Cost: 8 runs" in text and "no run measured its CPU time" in text  # the tests' runner forks
    spread = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in text.split("Score spread, loss")[1].splitlines()
        if line.startswith("| ") and not line.startswith("| method")
    }
    assert float(spread["infobatch"][-2]) > 0 and spread["random"][-2] == "-"  # only loss scorers record a loss
    assert float(spread["full"][1]) > 0 and spread["full"][-1].startswith("+0.000")  # full data keeps every pair
    runs = sorted(os.listdir(cache))
    assert len(runs) == 8 and not os.listdir(root / "logs") and not os.listdir(root / "records")
    run = json.loads((cache / "web-memorising-random-r0.5-s0.json").read_text())
    assert run["lock_in"]["visits"] > 0 and run["rare_share"]["clean"] is not None
    assert all("rsum_rare" in p for p in run["curve"])
    full = json.loads((cache / "web-memorising-full-s1.json").read_text())
    assert set(full["calibration"]) >= {"auroc_at_gap_peak", "gap_peak_epoch", "rare_clean_auroc_first_quarter"}
    assert (out / "calibration.md").read_text().count("| 1 |") >= 1
    for name in (
        "rsum_vs_cost_web-memorising.png",
        "score_spread_web-memorising.png",
        "calibration.png",
        "summary.json",
    ):
        assert os.path.getsize(out / name) > 0, name
    measures, table = runner.calibrate(cfg, str(root), str(cache), seed=0, json_path=str(tmp_path / "c.json"))
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["epochs"] == 3 and saved["gap_peak_epoch"] in (0, 1, 2) and saved == json.loads(json.dumps(measures))
    for seed, cpu in ((0, 100.0), (1, 121.0)):  # as a run at f779913 or later records it
        path = cache / f"web-memorising-infobatch-s{seed}.json"
        path.write_text(json.dumps(dict(json.loads(path.read_text()), cpu_seconds=cpu)))
    assert cli.run_profile("web", str(out), cache=str(cache), root=str(root), cfg=cfg, report_only=True) == 0
    text = (out / "results.md").read_text()
    infobatch = next(line.split(" | ") for line in text.splitlines() if line.startswith("| infobatch | 2 | "))
    assert infobatch[-2] == "110 (2)" and rows["random"][-2] == "-"
    assert "CPU time measured on 2 of them: 0.1 h" in text


def paper_bench(*flags):
    script = os.path.join(REPO, "scripts", "paper_bench.py")
    return subprocess.run([sys.executable, script, *flags], capture_output=True, text=True)


def test_calibrate_command_line_refuses_what_it_cannot_do():
    result = paper_bench("--calibrate")
    assert result.returncode == 2 and "--profile web" in result.stderr
    result = paper_bench("--profile", "web", "--only", "nowhere")
    assert result.returncode == 2 and "unknown regime 'nowhere'" in result.stderr
    for flags, message in (
        (["--seed", "-1"], "--seed: must be between 0 and 4294967295, got -1"),
        (["--json", os.path.join(REPO, "no-such-folder", "c.json")], "--json: folder "),
    ):
        result = paper_bench("--profile", "web", "--calibrate", *flags)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    # the real profile calibrates in a regime of its own, not a preset
    result = paper_bench("--profile", "real", "--calibrate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    want = "--calibrate: profile real has no preset to calibrate; its calibration is a regime: --only real-calibration"
    assert want in result.stderr


def test_intervals_use_students_t_at_any_number_of_values():
    # the table, then the expansion past it (exact: 2.0423 at 30, 2.0211 at 40, 1.9840 at 100)
    assert stats.t95(2) == 4.303 and stats.t95(11) == 2.201
    for df, exact in ((30, 2.0423), (40, 2.0211), (100, 1.9840)):
        assert abs(stats.t95(df) - exact) < 1e-3 and (df == 30 or df not in stats.T95)
    m, half, n = stats.interval([1.0, 2.0, 3.0] * 4)  # 12 values: 11 degrees of freedom
    assert (m, n) == (2.0, 12) and half == pytest.approx(2.201 * (8 / 11) ** 0.5 / 12**0.5)
