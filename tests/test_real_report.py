"""The ``real`` profile's report on fake cached runs (no training): the final number of a run
(the mean of its last ``final_window`` evaluations), the calibration with the main regime's
length rule, the premise table and its sentence, the junk column, the CPU kernels and the plots."""

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO

from open_clip_dissect.openclip.training.selection_record import write_epoch

sys.path.insert(0, os.path.join(REPO, "scripts"))
from benchmarks import analysis, cli, plan, runner  # noqa: E402
from benchmarks.cache import cache_file  # noqa: E402
from benchmarks.profiles.real import COMMON, REAL  # noqa: E402

CALIBRATION = dict(REAL["regimes"]["real-calibration"], epochs=20)
MAIN = dict(COMMON, epochs=17, ratios=(0.5,), seeds=(0, 1), methods=("full", "random", "dissect-mome"), main=True)
CFG = dict(REAL, regimes={"real-calibration": CALIBRATION, "real": MAIN})


def table(gaps):
    """A calibration table whose clean-noisy gap per epoch (0-based) is ``gaps``."""
    return [{"epoch": i, "gap": g, "clean": 20.0 + g, "noisy": 20.0} for i, g in enumerate(gaps)]


def calibration_run(gaps, seed=0):
    return {"seed": seed, "calibration": {"table": table(gaps)}}


# ----------------------------------------------------------------------------- the length rule


def test_the_length_is_the_first_epoch_where_the_gap_has_halved():
    gaps = [1.0, 4.0, 10.0] + [9.5] * 10 + [5.0] + [4.0] * 6  # peak at epoch 3, halved at 14 (from 1)
    rule = analysis.main_length([calibration_run(gaps)], least=12, most=20)
    assert (rule["peak_epoch"], rule["peak"], rule["halved_epoch"], rule["length"]) == (3, 10.0, 14, 14)
    # epochs before the peak whose gap is below half of it do not count (epoch 1 here)
    assert rule["gap"][0] < rule["peak"] / 2


def test_the_length_is_the_most_where_the_gap_never_halves():
    rule = analysis.main_length([calibration_run([1.0, 8.0, 7.0, 6.0, 5.5, 4.1])], least=2, most=50)
    assert rule["halved_epoch"] is None and rule["length"] == 50
    # nor where the gap never rises above zero: there is nothing to halve
    rule = analysis.main_length([calibration_run([-3.0, -1.0, -2.0, -4.0])], least=2, most=50)
    assert rule["halved_epoch"] is None and rule["length"] == 50


def test_the_length_is_at_least_the_least_where_the_gap_halves_early():
    rule = analysis.main_length([calibration_run([2.0, 10.0, 6.0, 5.0, 1.0] + [0.5] * 20)], least=12, most=50)
    assert rule["halved_epoch"] == 4 and rule["length"] == 12
    assert analysis.main_length([]) is None


def test_the_length_reads_the_gap_of_the_seed_mean():
    # seed 0 halves at epoch 3 and seed 1 never; their mean (10, 7.5, 5) halves at epoch 3, peak at 1
    runs = [calibration_run([10.0, 5.0, 4.0], 0), calibration_run([10.0, 10.0, 6.0], 1)]
    rule = analysis.main_length(runs, least=1, most=3)
    assert rule["gap"] == [10.0, 7.5, 5.0] and (rule["peak_epoch"], rule["halved_epoch"], rule["length"]) == (1, 3, 3)
    assert rule["seeds"] == [0, 1]
    # the real profile's defaults: at least 12 epochs, 50 if it never halves
    assert analysis.main_length(runs)["length"] == 12
    assert analysis.main_length([calibration_run([1.0, 2.0])])["length"] == 50


# ----------------------------------------------------------------------------- the final number


def test_the_final_number_is_the_mean_of_the_last_evaluations():
    run = {
        "curve": [
            {"epoch": e, "rsum": r, "rsum_rare": rr}
            for e, r, rr in ((1, 5.0, 1.0), (2, 10.0, 2.0), (3, 20.0, None), (4, 30.0, 4.0))
        ]
    }
    assert analysis.final(run) == 30.0 and analysis.final(run, 3) == 20.0 and analysis.final(run, 2) == 25.0
    assert analysis.final_rare(run) == 4.0 and analysis.final_rare(run, 3) is None
    assert analysis.final_rare(run, 1) == 4.0
    assert analysis.final_window(CFG) == 3 and analysis.final_window(dict(REAL, final_window=1)) == 1
    assert analysis.final_window({k: v for k, v in REAL.items() if k != "final_window"}) == 1


# ----------------------------------------------------------------------------- fake cached runs

EDGES = 20


def clean_noisy(epochs, seed, rising=False):
    """Per 0-based epoch the clean and noisy mean CLIPScore: the clean mean peaks at epoch 5
    (1-based) at 28 + seed, then drops by 0.25 an epoch while the noisy one rises by 0.25; the
    gap is 5 + 1.75 i up to its peak of 12, then 14 - 0.5 i (half of it, 6, at epoch 17).
    ``rising``: the clean mean rises to the end instead (no premise)."""
    out = []
    for i in range(epochs):
        noisy = 15.0 + 0.25 * i + seed
        clean = (20.0 + i if rising else (20.0 + 2 * i if i <= 4 else 28.0 - 0.25 * (i - 4))) + seed
        out.append((clean, noisy))
    return out


def rsum_curve(epochs, seed, offset=0.0):
    """Test R@sum after each epoch: up 2 an epoch to a peak at epoch 8, then down 1 an epoch."""
    return [
        {"epoch": e, "rsum": (30.0 + 2 * e if e <= 8 else 46.0 - (e - 8)) + offset + 0.5 * seed, "rsum_rare": 1.0}
        for e in range(1, epochs + 1)
    ]


def fake_run(regime, label, seed, epochs, offset=0.0, kernels="AVX2", rising=False):
    ratio = 0.5 if label != "full" else None
    candidates = 1000
    kept = candidates if label == "full" else candidates // 2
    run = {
        "regime": regime,
        "label": label,
        "ratio": ratio,
        "seed": seed,
        "strategy": CFG["methods"][label][0],
        "seconds": 600.0,
        "cpu_seconds": 580.0,
        "threads": 1,
        "code": "abc123",
        "events": [],
        "data": "openclipart-d0-0123456789",
        "cpu_kernels": kernels,
        "curve": rsum_curve(epochs, seed, offset),
        "epochs": [
            {
                "epoch": e,
                "candidates": candidates,
                "kept": kept,
                "audit_kept_precision": 0.7 if label == "full" else 0.75,
                "audit_random_precision": 0.7,
                "audit_auroc": 0.5,
                "clipscore_std": 6.0 + 0.1 * e,
                **({"selection_from_epoch": 4} if label == "dissect-mome" and e > 4 else {}),
            }
            for e in range(1, epochs + 1)
        ],
        "switch": 4 if label == "dissect-mome" else None,
        "rare_share": {
            "rare_clean": 1.0 if label == "full" else 0.4 + 0.01 * seed,
            "clean": 1.0 if label == "full" else 0.5,
        },
        "junk_share": {"junk": 1.0, "clean": 1.0}
        if label == "full"
        else {"junk": 0.3 + 0.02 * seed, "clean": 0.55 - 0.01 * seed},
    }
    if label == "full":
        means = clean_noisy(epochs, seed, rising)
        rows = []
        for i, (clean, noisy) in enumerate(means):
            rows.append(
                {
                    "epoch": i,
                    "gap": clean - noisy,
                    "auroc": 0.6 + 0.01 * i,
                    "rare_auroc": 0.55,
                    "clean": clean,
                    "noisy": noisy,
                }
                | {"rare_clean": clean - 1, "clean_full": math.nan, "clean_partial": math.nan, "clean_alt": clean}
                | {"clean_hard": math.nan, "clean_junk": clean - 3, "clean_not_junk": clean + 0.5}
                | {"junk_auroc": 0.62, "noisy_shuffle": noisy, "noisy_partial": math.nan}
            )
        run["calibration"] = {
            "auroc_at_gap_peak": 0.64,
            "gap_peak_epoch": 4,
            "rare_clean_auroc_first_quarter": 0.55,
            "epochs": epochs,
            "quarter_epochs": math.ceil(epochs / 4),
            "table": rows,
        }
        hist = [0] * 3 + [50, 200, 400, 250, 80, 20] + [0] * 11
        run["groups"] = [
            {
                "epoch": i,
                "all_mean": 0.7 * clean + 0.3 * noisy,
                "all_std": 6.0,
                "clean_mean": clean,
                "clean_std": 5.0,
                "clean_hist": hist,
                "noisy_mean": noisy,
                "noisy_std": 5.0,
                "noisy_hist": hist[2:] + [0, 0],
            }
            for i, (clean, noisy) in enumerate(means)
        ]
    else:
        if seed == 1 or label == "random":  # a run made before the curve was kept has none (mome seed 0)
            run["scores"] = [
                {"epoch": i, "clean": 30.0 + i + offset, "noisy": 20.0 + 1.2 * i, "auroc": 0.7 + 0.01 * seed}
                for i in range(epochs)
            ]
        group = {"kept_rate": 0.5, "kept_after_kept": 0.6, "kept_after_dropped": 0.4}
        run["lock_in"] = {"visits": 4000, "kept_rate": 0.5, "clean": group, "noisy": dict(group, kept_rate=0.45)}
    return run


def write(cache, runs):
    os.makedirs(cache, exist_ok=True)
    for run in runs:
        with open(cache_file(cache, plan.job_of(run)), "w") as f:
            json.dump(run, f)


def calibration_runs():
    return [fake_run("real-calibration", "full", seed, 20) for seed in (0, 1)]


def main_runs():
    runs = []
    for seed in (0, 1):
        runs.append(fake_run("real", "full", seed, 17, rising=seed == 1))
        runs.append(fake_run("real", "random", seed, 17, offset=-4.0 - seed, kernels="AVX512" if seed else "AVX2"))
        runs.append(fake_run("real", "dissect-mome", seed, 17, offset=-2.0 + 0.5 * seed))
    return runs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    write(str(root / "runs"), calibration_runs() + main_runs())
    out = root / "report"
    assert cli.run_profile("real", str(out), cache=str(root / "runs"), root=str(root), cfg=CFG, report_only=True) == 0
    return out, (out / "results.md").read_text(), json.loads((out / "summary.json").read_text())


def test_the_report_states_its_final_number(built):
    _, text, summary = built
    assert "the mean test R@sum of its last 3 evaluations" in text and summary["final_window"] == 3
    # full data seed 0: R@sum 46 - (e - 8) at epochs 15, 16, 17, so 38; seed 1 half a point up
    full = summary["regimes"]["real"]["full"]
    assert full["final"][0] == pytest.approx(38.25) and full["peak"][0] == pytest.approx(46.25)
    assert full["decline"][0] == pytest.approx(8.0)
    rows = {r["label"]: r for r in summary["regimes"]["real"]["tables"]["0.5"]["rows"]}
    assert rows["random"]["vs_full"][0] == pytest.approx(-4.5) and rows["dissect-mome"]["vs_random"][
        0
    ] == pytest.approx(2.75)


def test_the_calibration_table_and_the_length_rule(built):
    _, text, summary = built
    part = summary["calibration"]["real-calibration"]
    rule = part["rule"]
    # the gap: 5 + 1.75 i up to 12 at epoch 5, then 14 - 0.5 i: 6 at epoch 17
    assert (rule["peak_epoch"], rule["peak"], rule["halved_epoch"], rule["length"]) == (5, 12.0, 17, 17)
    assert part["seeds"] == [0, 1] and part["complete"]
    first, peak = part["table"][0], part["table"][4]
    assert first["epoch"] == 1 and first["clean"] == pytest.approx(20.5) and first["noisy"] == pytest.approx(15.5)
    assert peak["gap"] == pytest.approx(12.0) and peak["clean_junk"] == pytest.approx(25.5)
    assert peak["junk_auroc"] == pytest.approx(0.62) and peak["auroc"] == pytest.approx(0.64)
    assert peak["rsum"] == pytest.approx(40.25)  # (40 + 40.5) / 2, evaluated at epoch 5's end
    assert "## Calibration: `real-calibration`" in text
    assert (
        "Seeds 0, 1 (20 epochs): the gap peaks at epoch 5 (12.00); it has halved (to 6.00, at most 6.00) at "
        "epoch 17. **E = 17**. The design gives `real` 17 epochs: the rule's E." in text
    )
    assert "| 5 | 28.5 | 16.5 | 12.00 | 0.640 | 40.2 | 25.5 | 0.620 |" in text
    assert "| 17 (E) |" in text and len([line for line in text.splitlines() if line.startswith("| 1")]) >= 11


def test_the_premise_table_and_its_sentence(built):
    _, text, summary = built
    premise = summary["premise"]
    assert set(premise) == {"real-calibration", "real"}
    calibration = {r["seed"]: r for r in premise["real-calibration"]["rows"]}
    # seed 0: clean peaks at epoch 5 (28), ends at 28 - 0.25 * 15; noisy rises 0.25 * 15 over the same epochs
    row = calibration[0]
    assert (row["clean_peak_epoch"], row["epochs"], row["gap_peak_epoch"], row["warmup_end"]) == (5, 20, 5, 5)
    assert row["clean_drop"] == pytest.approx(3.75) and row["noisy_rise"] == pytest.approx(3.75) and row["premise"]
    assert row["rsum_peak"] == 46.0 and row["rsum_peak_epoch"] == 8 and row["decline"] == pytest.approx(46 - 35)
    assert premise["real-calibration"]["premise_seeds"] == [0, 1]
    main = {r["seed"]: r for r in premise["real"]["rows"]}
    assert main[0]["premise"] and not main[1]["premise"] and main[1]["clean_peak_epoch"] == 17
    assert main[1]["clean_drop"] == 0 and main[1]["warmup_end"] == 4
    assert premise["real"]["decline"][2] == 2 and premise["real"]["decline"][1] is not None
    assert "| real | 1 | 17 of 17 | 0.00 | +0.00 | 17 / 4 | 46.5 (8) | 38.5 | 8.0 | no |" in text
    assert "`real-calibration`, over 2 seeds" in text
    assert "The premise appears on every seed (seed 0: the clean mean peaks at epoch" in text
    assert "The premise appears on 1 of 2 seeds (seed 0: the clean mean peaks at epoch " in text
    assert (
        "not on the others (seed 1: the clean mean peaks at epoch 17 of 17, "
        "in the last quarter, the clean mean does not drop, the noisy mean does not rise)." in text
    )


def test_the_methods_table_has_the_junk_column_and_the_kernels_are_named(built):
    out, text, summary = built
    assert "| junk kept | other clean kept |" in text
    mome = next(line for line in text.splitlines() if line.startswith("| dissect-mome | 2 |"))
    assert "| 0.310 ± 0.014 | 0.545 ± 0.007 |" in mome
    # the calibration regime has no methods table of its own
    calibration = text.split("## real-calibration")[1].split("## real\n")[0]
    assert "### r = " not in calibration and "Full data only" in calibration
    assert "target at most" not in text  # the design names no precision target
    assert "7 of 8 runs computed with the AVX2 kernels expected" in text
    assert "real-random-r0.5-s1 (AVX512)" in text
    assert summary["cpu_kernels"]["differ"] == ["real-random-r0.5-s1 (AVX512)"]
    for name in (
        "calibration_real-calibration.png",
        "fig3_real-calibration.png",
        "fig3_real.png",
        "rsum_vs_cost_real.png",
        "ranking_auroc_real.png",
        "scores_real.png",
    ):
        assert (out / name).stat().st_size > 10_000, name
    assert not (out / "calibration.md").exists() and not (out / "calibration.png").exists()


def test_the_report_builds_from_the_calibration_alone(tmp_path):
    write(str(tmp_path / "runs"), calibration_runs()[:1])
    out = tmp_path / "report"
    assert (
        cli.run_profile("real", str(out), cache=str(tmp_path / "runs"), root=str(tmp_path), cfg=CFG, report_only=True)
        == 0
    )
    text = (out / "results.md").read_text()
    assert "**E = 17** (provisional" in text and "## real\n" in text and "Not run yet." in text
    assert "The one run computed with the AVX2 kernels" in text
    assert (
        "The premise appears on every seed (seed 0: the clean mean peaks at epoch" in text
        and "one seed: no interval" in text
    )
    assert (out / "fig3_real-calibration.png").exists() and not (out / "fig3_real.png").exists()


def test_the_report_builds_on_the_frozen_design_and_with_full_data_alone_in_the_main_regime(tmp_path):
    write(str(tmp_path / "runs"), calibration_runs())
    out = tmp_path / "frozen"
    assert cli.run_profile("real", str(out), cache=str(tmp_path / "runs"), root=str(tmp_path), report_only=True) == 0
    text = (out / "results.md").read_text()
    # REAL's calibration has 50 epochs: these 20 leave E provisional; the gap halves at epoch 17
    assert "**E = 17** (provisional" in text
    assert "## real\n" in text and text.split("## real\n")[1].split("## ")[0].strip().endswith("Not run yet.")
    write(str(tmp_path / "runs"), [r for r in main_runs() if r["label"] == "full"])
    out = tmp_path / "full-only"
    assert (
        cli.run_profile("real", str(out), cache=str(tmp_path / "runs"), root=str(tmp_path), cfg=CFG, report_only=True)
        == 0
    )
    text = (out / "results.md").read_text()
    assert "| full | 2 | 38.2 ± 0.4 |" in text and "| real | 1 | 17 of 17 |" in text and "**E = 17**." in text


def test_the_gap_can_shrink_while_the_clean_mean_never_drops():
    """The calibration's shape: both means rise to the end (no Fig. 3b drop), but the gap peaks
    early and shrinks, which is what delta = hist - curr reads."""
    clean = [20.0, 40.0, 50.0, 54.0, 56.0, 57.0, 58.0, 58.5]
    noisy = [15.0, 26.0, 34.0, 41.0, 46.0, 49.0, 51.0, 53.0]
    run = {
        "regime": "real",
        "seed": 0,
        "calibration": {"table": [{"clean": c, "noisy": n} for c, n in zip(clean, noisy)]},
        "curve": [{"epoch": e + 1, "rsum": 10.0 + e} for e in range(8)],
    }
    row = analysis.premise_row(run, 3)
    assert not row["premise"] and row["clean_peak_epoch"] == 8  # the clean mean peaks at the end
    assert row["gap_peak_epoch"] == 3 and row["gap_peak"] == 16.0 and row["gap_end"] == 5.5
    assert row["gap_shrinks"]
    flat = dict(run, calibration={"table": [{"clean": c, "noisy": c - 5.0} for c in clean]})
    assert not analysis.premise_row(flat, 3)["gap_shrinks"]  # a gap that never shrinks


def test_the_rare_columns_are_left_out_where_the_draw_has_too_few_rare_pairs(tmp_path):
    write(str(tmp_path / "runs"), calibration_runs() + main_runs())
    heads = {}
    for name, sizes in (("small", {"train": 16, "test": 2}), ("enough", {"train": 60, "test": 25})):
        out = tmp_path / name
        cfg = dict(CFG, group_sizes={"rare": sizes})
        assert (
            cli.run_profile(
                "real", str(out), cache=str(tmp_path / "runs"), root=str(tmp_path), cfg=cfg, report_only=True
            )
            == 0
        )
        text = (out / "results.md").read_text()
        head = next(line for line in text.splitlines() if line.startswith("| method | seeds |"))
        rows = [line for line in text.splitlines() if line.startswith("| dissect-mome | 2 |")]
        # every row has as many cells as the head
        assert rows and all(row.count("|") == head.count("|") for row in rows)
        heads[name] = (head, text)
    head, text = heads["small"]
    assert "R@sum rare" not in head and "rare kept" not in head and "| clean kept |" in head
    assert "holds 16 training pairs and 2 test images in this data draw, so `R@sum rare` and `rare kept` are " in text
    head, text = heads["enough"]
    assert "| R@sum rare | rare kept | clean kept |" in head and "in this data draw" not in text
    # the profile states its draw's sizes
    assert REAL["group_sizes"] == {"rare": {"train": 16, "test": 2}}


def test_the_runner_logs_each_runs_final_number(tmp_path, monkeypatch, capsys):
    from benchmarks import runner

    class NoData:  # the data is the builder's business; these runs are cached already
        def make(self, *args):
            pass

    runs = {plan.job_of(r): r for r in main_runs()}
    monkeypatch.setattr(runner, "builder", lambda spec: NoData())
    monkeypatch.setattr(runner, "run_one", lambda cfg, root, cache, job, threads=1: runs[job])
    cfg = dict(CFG, regimes={"real": MAIN})
    runner.run_all(cfg, str(tmp_path), str(tmp_path / "runs"), only="real")
    lines = [line for line in capsys.readouterr().out.splitlines() if "real-full-s0:" in line]
    # the mean of the last 3 evaluations (39, 38, 37), not the last one
    assert len(lines) == 1 and "final R@sum 38.0 (600 s)" in lines[0], lines


def test_where_dissect_stands_in_words(built):
    _, text, summary = built
    section = text.split("## Where DISSect stands: real, r = 0.5\n")[1].split("\n## ")[0]
    assert (
        "the clean-noisy gap shrank after an early peak on 1 of 2 seeds, and the clean mean dropped after an "
        "early peak on 1 of them (the premise table)." in section
    )
    # mome's offset -2 + 0.5 s against random's -4 - s: +2.0 and +3.5; against full data -2.0 and -1.5
    mome = next(line for line in section.splitlines() if line.startswith("- `dissect-mome`"))
    assert mome.startswith("- `dissect-mome` (2 seeds, final 36.5 ± 0.7): against `random` 2.8 ± 9.5 (cannot tell); ")
    assert "against full data -1.8 ± 3.2 (cannot tell)" in mome and "(switch at epoch 4, 4, 0-based)" in mome
    # random is the best baseline here: said once
    assert mome.count("against `random`") == 1 and "best non-DISSect" not in mome
    # the kept sets: 0.75 against 0.70 in every epoch from the switch on
    assert "kept sets' clean share +0.050 against their candidates' from the switch on" in mome
    assert "The other methods' kept sets, over all epochs: `random` +0.050." in section
    gains = summary["from_switch"]["real"]["0.5"]
    assert set(gains) == {"random", "dissect-mome"} and gains["dissect-mome"]["gain"][0] == pytest.approx(0.05)
    # the fake runs' ranking AUROC is 0.5 in every epoch
    assert gains["dissect-mome"]["auroc"][0] == pytest.approx(0.5) and ", its ranking's AUROC 0.500 (switch" in mome
    # the calibration regime has no such section, and a profile without DISSect rows none at all
    assert "## Where DISSect stands: real-calibration" not in text
    # how far the runs got: random's curve on both seeds (epoch 16: clean 46 - 4 - s, noisy 39.2),
    # mome's on seed 1 only (46 - 2 + 0.5); full data's from its calibration table
    reached = next(line for line in section.splitlines() if line.startswith("How far the runs got"))
    # the gap: random's 5.5 - 0.2 epochs (seed mean) falls to 2.3, mome's 8.5 - 0.2 epochs to 5.3
    assert (
        "`random` 41.5 / 39.2, AUROC 0.705, gap 42% of its peak (epoch 1) (2 seeds); `dissect-mome` 44.5 / 39.2, "
        "AUROC 0.710, gap 62% of its peak (epoch 1) (1 seed)." in reached
    )
    # full data at epoch 17: seed 0's clean mean 28 - 3, seed 1's (rising) 37; noisy 19 and 20
    # (seed 1's gap grows to the end, so the seed mean's peak is the last epoch)
    assert "curve: `full` 31.0 / 19.5, AUROC 0.760, gap 100% of its peak (epoch 17) (2 seeds); `random`" in reached
    assert summary["scores"]["real"]["0.5"]["dissect-mome"]["seeds"] == [1]
    assert "Identical runs" not in section and summary["identical"] == {}


def test_the_kept_gain_and_the_ranking_auroc_read_the_epochs_from_the_switch_on():
    run = fake_run("real", "dissect-mome", 0, 8)
    for e in run["epochs"]:  # noisier before the switch (epoch index 4), cleaner after it
        e["audit_kept_precision"] = 0.6 if e["epoch"] <= 4 else 0.9
        e["audit_auroc"] = 0.5 if e["epoch"] <= 4 else (0.7 if e["epoch"] < 8 else math.nan)
    never = fake_run("real", "random", 0, 8)
    measured = analysis.from_switch(CFG, [run, never, fake_run("real", "full", 0, 8)])["real"]["0.5"]
    assert measured["dissect-mome"]["gain"][0] == pytest.approx(0.2) and measured["random"]["gain"][0] == pytest.approx(
        0.05
    )
    # NaN (an epoch without both classes) is left out of the mean
    assert measured["dissect-mome"]["auroc"][0] == pytest.approx(0.7) and measured["random"]["auroc"][0] == 0.5
    assert "full" not in measured


def with_clipscore():
    main = dict(MAIN, methods=("full", "random", "clipscore", "dissect-mome"))
    return dict(CFG, regimes={"real-calibration": CALIBRATION, "real": main})


def report_of(tmp_path, cfg, runs):
    """Writes ``runs`` into a cache under ``tmp_path`` and builds the report from it; its folder."""
    write(str(tmp_path / "runs"), runs)
    out = tmp_path / "report"
    assert (
        cli.run_profile("real", str(out), cache=str(tmp_path / "runs"), root=str(tmp_path), cfg=cfg, report_only=True)
        == 0
    )
    return out


def test_where_dissect_stands_names_the_best_baseline_where_it_is_not_random(tmp_path):
    cfg = with_clipscore()
    runs = main_runs() + [fake_run("real", "clipscore", seed, 17, offset=-1.0) for seed in (0, 1)]
    out = report_of(tmp_path, cfg, runs)
    text = (out / "results.md").read_text()
    mome = next(line for line in text.splitlines() if line.startswith("- `dissect-mome`"))
    # clipscore (-1, -1) above random: mome's -2 + 0.5 s against it: -1.0 and -0.5
    assert "against the best non-DISSect method, `clipscore`, -0.8 ± 3.2 (cannot tell)" in mome
    assert "`clipscore` +0.050" in text
    # a best baseline that trains on more samples says how many
    for run in runs:
        if run["label"] == "clipscore":
            for e in run["epochs"]:
                e["kept"] = 800
    report_of(tmp_path, cfg, runs)
    mome = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("- `dissect-mome`"))
    assert "`clipscore` (which back-propagated 14k samples to DISSect's 8k), -0.8 ± 3.2 (cannot tell)" in mome


def test_runs_that_evaluated_to_the_same_curve_are_named_as_identical(tmp_path):
    cfg = with_clipscore()
    # clipscore on seed 1 evaluates exactly as mome does (offset -2 + 0.5); on seed 0 it does not
    runs = main_runs() + [fake_run("real", "clipscore", seed, 17, offset=-1.5 if seed else -1.0) for seed in (0, 1)]
    assert analysis.identical_runs(cfg, runs) == {"real": {"0.5": [[1, ["clipscore", "dissect-mome"]]]}}
    out = report_of(tmp_path, cfg, runs)
    text = (out / "results.md").read_text()
    assert "so their paired difference on that seed is exactly 0: seed 1: `clipscore`, `dissect-mome`." in text
    # no two runs alike: no such sentence
    runs[-1]["curve"][-1]["rsum"] += 0.1
    assert analysis.identical_runs(cfg, runs) == {}


def kept_records(folder, epochs, clean=5, noisy=3):
    """A random run's --selection-record folder: the clean pairs rise to 30 by epoch 4 and stay,
    the noisy ones rise 2 an epoch from 5. Keys end with the sample's key, as the runner's."""
    n = clean + noisy
    keys = [f"/data/train/00000.tar/{i:08d}" for i in range(n)]
    for epoch in range(epochs):
        curr = np.array([10.0 + 5 * min(epoch, 4)] * clean + [5.0 + 2 * epoch] * noisy)
        zeros = torch.zeros(n)
        columns = dict(curr=torch.tensor(curr), hist=zeros, delta=zeros, kept=torch.ones(n, dtype=torch.bool))
        write_epoch(str(folder), epoch, keys, dict(columns, noisy=torch.full((n,), -1)))
    return pd.DataFrame(
        {"noisy": [False] * clean + [True] * noisy, "noise_kind": None, "style": "alt", "hard": False, "rare": False}
        | {"junk": False},
        index=pd.Index([f"{i:08d}" for i in range(n)], name="key"),
    )


def test_the_delta_replay_is_added_from_kept_records_and_reported(tmp_path, monkeypatch):
    runs = calibration_runs() + main_runs()
    write(str(tmp_path / "runs"), runs)
    root, kept = tmp_path / "root", tmp_path / "kept"
    (root / "data" / runs[-1]["data"]).mkdir(parents=True)
    samples = kept_records(kept / "real-random-r0.5-s0", 17)
    monkeypatch.setattr(runner, "builder", lambda spec: SimpleNamespace(samples=lambda data_dir: samples))
    assert runner.add_replay(CFG, str(root), str(tmp_path / "runs"), str(kept)) == ["real-random-r0.5-s0"]
    run = json.loads((tmp_path / "runs" / "real-random-r0.5-s0.json").read_text())
    assert run["replay_source"] == "kept records" and len(run["replay"]) == 17
    # the warm-up's history is epoch 3's (a quarter of 17 epochs: 4); the clean pairs rank below
    # the noisy ones at epochs 4 and 5, above them from epoch 6 on
    assert [r["warmup_auroc"] for r in run["replay"][4:7]] == [0.0, 0.0, 1.0]
    # a run that has its replay is left as it is; a folder of fewer epochs than the run is refused
    assert runner.add_replay(CFG, str(root), str(tmp_path / "runs"), str(kept)) == []
    kept_records(kept / "real-random-r0.5-s1", 5)
    with pytest.raises(ValueError, match="records of 5 epochs, the run had 17"):
        runner.add_replay(CFG, str(root), str(tmp_path / "runs"), str(kept))
    # a folder without records, or with a truncated file, is named
    for name in os.listdir(kept / "real-random-r0.5-s1"):
        if name.endswith(".parquet"):
            os.remove(kept / "real-random-r0.5-s1" / name)
    with pytest.raises(ValueError, match="real-random-r0.5-s1: its records cannot be read"):
        runner.add_replay(CFG, str(root), str(tmp_path / "runs"), str(kept))
    (kept / "real-random-r0.5-s1" / "epoch_0.rank0-of-1.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="real-random-r0.5-s1: its records cannot be read"):
        runner.add_replay(CFG, str(root), str(tmp_path / "runs"), str(kept))
    out = tmp_path / "report"
    assert (
        cli.run_profile("real", str(out), cache=str(tmp_path / "runs"), root=str(tmp_path), cfg=CFG, report_only=True)
        == 0
    )
    text = (out / "results.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("Before any feedback"))
    assert "the recorded scores of `random` (seed 0; its choices ignore the scores)" in line
    assert (
        "AUROC 0.846 for the warm-up's history, from the authors' switch on (ranks the clean pairs above the noisy "
        "ones; 1.000 in the last epoch)" in line
    )
    assert (
        "for the moving average's, every epoch" in line and "against `dissect-mome` 0.500 in DISSect's own runs" in line
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replay"]["real"]["0.5"]["random"]["seeds"] == [0]


def test_the_replay_keeps_each_ratio_apart_and_full_data_joins_every_ratio():
    cfg = dict(CFG, regimes={**CFG["regimes"], "real": dict(MAIN, ratios=(0.3, 0.5))})

    def run(label, ratio, seed, auroc):
        rows = [{"epoch": i, "warmup_auroc": auroc, "mome_auroc": auroc} for i in range(17)]
        return {"regime": "real", "label": label, "ratio": ratio, "seed": seed, "replay": rows}

    runs = [
        run("full", None, 0, 0.7),
        run("random", 0.3, 0, 0.2),
        run("random", 0.5, 0, 0.6),
        run("random", 0.5, 1, 0.4),
        # a calibration run's replay is not the main regime's
        dict(run("full", None, 0, 0.9), regime="real-calibration"),
    ]
    replays = analysis.delta_replays(cfg, runs)
    assert set(replays) == {"real"} and set(replays["real"]) == {"all", "0.3", "0.5"}
    at_half = analysis.replays_at(replays["real"], 0.5)
    assert list(at_half) == ["full", "random"] and at_half["random"]["seeds"] == [0, 1]
    assert at_half["random"]["mome_mean"][0] == pytest.approx(0.5) and at_half["full"]["mome_last"] == 0.7
    # the warm-up's delta is read from the authors' switch on (a quarter of 17 epochs: 4)
    assert at_half["random"]["warmup_auroc"][:5] == [None] * 4 + [pytest.approx(0.5)]
    assert analysis.replays_at(replays["real"], 0.3)["random"]["mome_last"] == 0.2
    assert analysis.replays_at({}, 0.5) == {}


def test_the_replay_command_line_refuses_a_missing_folder():
    script = os.path.join(REPO, "scripts", "paper_bench.py")
    for flags, message in (
        (
            ["--profile", "real", "--add-replay", "/no/such/folder"],
            "--add-replay: folder /no/such/folder does not exist",
        ),
        (["--add-replay", "/tmp"], "--add-replay belong to --profile"),
    ):
        result = subprocess.run([sys.executable, script, *flags], capture_output=True, text=True)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
