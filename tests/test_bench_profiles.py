"""The seeded profiles' package (scripts/benchmarks/) on the committed runs, without training: a
report reads only the runs of its design, a calibration never writes into the report's cache, and
the committed web report is what its committed runs give."""

import json
import os
import re
import shutil
import sys

import pytest
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "scripts"))
from benchmarks import analysis, cli, plan, runner  # noqa: E402
from benchmarks.cache import cache_file, read_cache  # noqa: E402
from benchmarks.profiles import PROFILES  # noqa: E402
from benchmarks.profiles.web import WEB  # noqa: E402

WEB_RUNS = os.path.join(REPO, "docs", "web_bench", "runs")
SHUFFLE = dict(WEB, regimes={"memorising-shuffle": WEB["regimes"]["memorising-shuffle"]})


def committed(regime):
    return [r for r in read_cache(WEB_RUNS) if r["regime"] == regime]


def stray(run, **changes):
    """A copy of a committed run as another seed, ratio or method would leave it in the cache."""
    out = json.loads(json.dumps(run))
    out.update(changes)
    out["curve"][-1]["rsum"] += 50.0  # a stray that entered the report would move its numbers
    return out


def strays():
    runs = {(r["label"], r["ratio"], r["seed"]): r for r in committed("memorising-shuffle")}
    return [
        stray(runs[("full", None, 0)], seed=7),  # what `--calibrate --seed 7` left before
        stray(runs[("random", 0.5, 0)], seed=7),
        stray(runs[("random", 0.5, 1)], ratio=0.3),  # a ratio the regime does not have
        stray(runs[("random", 0.5, 2)], label="margin"),  # a method it does not have
    ]


def test_a_run_outside_the_design_never_enters_the_report():
    runs = committed("memorising-shuffle")
    assert len(runs) == len(plan.jobs(SHUFFLE)) == 30
    report = analysis.analyse(SHUFFLE, runs)
    assert analysis.analyse(SHUFFLE, runs + strays()) == report
    part = report["memorising-shuffle"]
    assert part["full"]["n"] == 3 and part["time"]["runs"] == 30
    assert {r["n"] for r in part["tables"][0.5]["rows"]} == {3}
    assert len(plan.in_design(runs + strays(), plan.jobs(SHUFFLE))) == 30


def test_report_only_ignores_a_stray_run_in_the_cache(tmp_path):
    cache = tmp_path / "runs"
    cache.mkdir()
    for run in committed("memorising-shuffle"):
        shutil.copy(cache_file(WEB_RUNS, plan.job_of(run)), cache)
    texts = []
    for extra in ([], strays()):
        for run in extra:
            (cache / os.path.basename(cache_file("", plan.job_of(run)))).write_text(json.dumps(run))
        out = tmp_path / f"out{len(extra)}"
        assert (
            cli.run_profile("web", str(out), cache=str(cache), root=str(tmp_path), report_only=True, cfg=SHUFFLE) == 0
        )
        texts.append(((out / "results.md").read_text(), (out / "summary.json").read_text()))
    assert len(os.listdir(cache)) == 34 and texts[0] == texts[1]
    assert "over 30 cached runs" in texts[1][0]


def test_calibrate_never_writes_into_the_reports_cache(tmp_path, monkeypatch):
    cache = tmp_path / "runs"
    cache.mkdir()
    full = next(r for r in committed("web-memorising") if r["label"] == "full" and r["seed"] == 0)
    shutil.copy(cache_file(WEB_RUNS, plan.job_of(full)), cache)
    trained = []

    def train(cfg, root, where, job, threads=1):  # stands in for the ten minutes of training
        path = cache_file(where, job)
        if not os.path.isfile(path):
            trained.append((where, job))
            os.makedirs(where, exist_ok=True)
            with open(path, "w") as f:
                json.dump(dict(full, seed=job[3]), f)
        with open(path) as f:
            return json.load(f)

    monkeypatch.setattr(runner, "run_one", train)
    calibration = tmp_path / "calibration"
    measures, _ = runner.calibrate(WEB, str(tmp_path), str(cache), 7, calibration_cache=str(calibration))
    assert measures["seed"] == 7 and trained == [(str(calibration), ("web-memorising", "full", None, 7))]
    assert os.listdir(cache) == [os.path.basename(cache_file(cache, plan.job_of(full)))]
    assert os.listdir(calibration) == ["web-memorising-full-s7.json"]
    # a seed the report already has is read from its cache, not trained again
    trained.clear()
    measures, _ = runner.calibrate(WEB, str(tmp_path), str(cache), 0, calibration_cache=str(calibration))
    assert not trained and measures["final_rsum"] == full["curve"][-1]["rsum"]
    # the default calibration cache is the profile's working folder, not the report's
    default = runner.calibrate(WEB, str(tmp_path / "work"), str(cache), 8)[0]
    assert default["seed"] == 8 and os.path.isfile(tmp_path / "work" / "calibration" / "web-memorising-full-s8.json")
    assert len(os.listdir(cache)) == 1
    assert PROFILES["web"].calibration_cache() == "bench/results/web/calibration"


@pytest.mark.slow  # every plot of 150 runs: a few seconds
def test_the_committed_web_report_is_what_its_committed_runs_give(tmp_path):
    out = tmp_path / "web"
    assert cli.run_profile("web", str(out), cache=WEB_RUNS, root=str(tmp_path), report_only=True) == 0
    docs = os.path.join(REPO, "docs", "web_bench")
    for name in ("summary.json", "calibration.md", "results.md"):
        with open(os.path.join(docs, name)) as f:
            want = f.read()
        got = (out / name).read_text()
        if name == "results.md":  # the date of the report is the day it was written
            want, got = (re.sub(r"report of \d{4}-\d\d-\d\d", "report of DATE", t, count=1) for t in (want, got))
        assert got == want, name


@pytest.mark.slow  # every plot of 60 runs: a few seconds
def test_the_committed_paper_report_is_what_its_committed_runs_and_notes_give(tmp_path):
    docs = os.path.join(REPO, "docs", "paper_bench")
    shutil.copytree(os.path.join(docs, "runs"), tmp_path / "runs")
    assert cli.run_paper(str(tmp_path), report_only=True) == 0
    with open(os.path.join(docs, "results.md")) as f:
        want = f.read().splitlines()
    got = (tmp_path / "results.md").read_text().splitlines()
    # the dated note written after the design froze survives a rebuild
    assert got[2].startswith("> **Measured with a leak (noted 2026-12-02).**")

    def without_command(lines):  # the command line names the day and the seconds of the invocation
        return [line for line in lines if not line.startswith("Command: `make bench PROFILE=paper`")]

    assert without_command(got) == without_command(want) and len(got) == len(want)
