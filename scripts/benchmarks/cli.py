"""The seeded profiles' command line (``python scripts/paper_bench.py``, ``make bench
PROFILE=paper|web|real``) and the two ways a profile runs: ``run_profile`` (a comparison profile:
``web``, ``real`` and every new one) and ``run_paper`` (the frozen ``paper`` profile)."""

import argparse
import json
import os
import time

from . import analysis, plots, report, runner
from .cache import read_cache
from .data import REPO
from .plan import in_design, jobs, paper_jobs
from .profiles import PROFILES

COMPARISON = tuple(name for name, profile in PROFILES.items() if profile.kind == "comparison")


def run_profile(name, out=None, cache=None, root=None, only=None, report_only=False, cfg=None, design=None):
    """Run (or with ``report_only`` only report) the comparison profile ``name``: its runs, then
    ``results.md``, ``summary.json``, the plots and the calibration table in ``out``, from every
    cached run of the design (also runs of other invocations; never a run outside the design)."""
    profile = PROFILES[name]
    cfg = cfg or profile.design
    out = out or os.path.join(REPO, profile.out)
    cache = cache or profile.cache(out)
    root = root or os.path.join(REPO, profile.work)
    os.makedirs(out, exist_ok=True)
    if not report_only:
        runner.run_all(cfg, root, cache, only)
    runs = in_design(read_cache(cache), jobs(cfg))
    if report_only and not runs:
        raise SystemExit(f"--report-only: no runs of the design in {cache} (run the profile first, or pass --out)")
    real = analysis.analyse_real(cfg, runs) if analysis.calibration_regimes(cfg) else None
    plots.plots(cfg, out, runs, real=real)
    calibration = report.calibration_markdown(cfg, runs, name)
    if calibration:
        with open(os.path.join(out, "calibration.md"), "w") as f:
            f.write(calibration)
    text = report.write_report(cfg, out, analysis.analyse(cfg, runs), runs, name, design, real=real)
    print(text)
    return 0


def run_paper(root, cfg=None, report_only=False):
    """Run (or with ``report_only`` only report) the ``paper`` profile; runs are cached in
    ``<root>/runs``, the report is written to ``root``."""
    cfg = cfg or PROFILES["paper"].design
    os.makedirs(root, exist_ok=True)
    started = time.time()
    if report_only:
        if not os.path.isdir(os.path.join(root, "runs")):
            raise SystemExit(f"--report-only: no runs in {root}/runs (run the profile first, or pass --out)")
        runs = read_cache(os.path.join(root, "runs"))
    else:
        runs = runner.paper_run_all(cfg, root)
    runs = in_design(runs, paper_jobs(cfg))
    plots.paper_plots(cfg, root, runs)
    text = report.write_paper_report(cfg, root, analysis.analyse_paper(cfg, runs), runs, started)
    print(text)
    return 0


def main(argv=None):
    defaults = "; ".join(f"{name}: {profile.out}" for name, profile in PROFILES.items())
    p = argparse.ArgumentParser(
        description=(
            "The seeded benchmark profiles of make bench: 'paper' (its design and report are frozen) and the "
            f"comparison profiles ({', '.join(COMPARISON)}; 'web': the web preset, every baseline, 5 seeds). "
            "Designs: scripts/benchmarks/profiles/."
        )
    )
    p.add_argument("--profile", choices=tuple(PROFILES), default="paper", help="Profile (default: paper).")
    p.add_argument("--out", default=None, help=f"Output folder (default: the profile's; {defaults}).")
    p.add_argument(
        "--cache",
        default=None,
        help="web: folder of the cached per-run results the report reads (default: <out>/runs, committed under docs/).",
    )
    p.add_argument(
        "--only",
        default=None,
        metavar="REGIME",
        help="web: run only this regime, e.g. web-memorising (default: all, in order).",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        default=False,
        help="Only rebuild the report and plots from the cached runs (default: off).",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        default=False,
        help="web: the calibration measures of the main regime's full-data run for --seed (read from the "
        "report's cache where the profile made it, else trained into --calibration-cache; about 10 minutes "
        "on 2 cores), printed and written to --json (default: off).",
    )
    p.add_argument(
        "--add-replay",
        default=None,
        metavar="DIR",
        help="comparison profiles: add the delta replay to the cached runs of full data and random from their "
        "--selection-record folders kept in DIR (one folder a run, named as the run), then rebuild the report "
        "(default: None; runs made since the replay was added to the runner have it already).",
    )
    p.add_argument("--seed", type=int, default=0, help="--calibrate: the data and training seed (default: 0).")
    p.add_argument("--json", default=None, help="--calibrate: write the measures to this file (default: None).")
    p.add_argument(
        "--calibration-cache",
        default=None,
        metavar="DIR",
        help="--calibrate: where the runs it trains are cached, never the report's cache (default: "
        "bench/results/<profile>/calibration).",
    )
    args = p.parse_args(argv)
    profile = PROFILES[args.profile]
    if profile.kind == "paper":
        if args.calibrate or args.only or args.cache or args.calibration_cache or args.add_replay:
            p.error(
                "--calibrate, --only, --cache, --calibration-cache and --add-replay belong to --profile "
                + " or ".join(COMPARISON)
            )
        return run_paper(
            os.path.abspath(args.out or os.path.join(REPO, profile.out)),
            report_only=args.report_only,
        )
    out = os.path.abspath(args.out or os.path.join(REPO, profile.out))
    regimes = profile.design["regimes"]
    if args.only and args.only not in regimes:
        p.error(f"--only: unknown regime {args.only!r}; choose from {', '.join(regimes)}")
    if args.calibrate:
        # refused before the ten minutes of training, not after them
        if not any(spec.get("main") for spec in regimes.values()):
            calibrating = analysis.calibration_regimes(profile.design)
            p.error(
                f"--calibrate: profile {args.profile} has no preset to calibrate"
                + (f"; its calibration is a regime: --only {calibrating[0]}" if calibrating else "")
            )
        if not 0 <= args.seed < 2**32:
            p.error(f"--seed: must be between 0 and {2**32 - 1}, got {args.seed}")
        folder = os.path.dirname(os.path.abspath(args.json)) if args.json else None
        if folder and not os.path.isdir(folder):
            p.error(f"--json: folder {folder} does not exist")
        measures, table = runner.calibrate(
            profile.design,
            os.path.join(REPO, profile.work),
            os.path.abspath(args.cache or profile.cache(out)),
            args.seed,
            args.json,
            calibration_cache=os.path.abspath(
                args.calibration_cache or os.path.join(REPO, profile.calibration_cache())
            ),
        )
        print(json.dumps(measures, indent=1))
        return 0
    if args.add_replay:
        if not os.path.isdir(args.add_replay):
            p.error(f"--add-replay: folder {args.add_replay} does not exist")
        cache = os.path.abspath(args.cache or profile.cache(out))
        try:
            added = runner.add_replay(profile.design, os.path.join(REPO, profile.work), cache, args.add_replay)
        except (OSError, ValueError) as e:
            p.error(f"--add-replay: {e}")
        print(f"--add-replay: added to {len(added)} run(s): {', '.join(added) or 'none'}")
        args.report_only = True
    return run_profile(
        args.profile,
        out,
        cache=args.cache and os.path.abspath(args.cache),
        only=args.only,
        report_only=args.report_only,
    )
