"""From cached runs to the numbers a report prints: per method and ratio the final R@sum, paired
intervals against ``random``, the best baseline and full data, with their verdicts, cost, shares
kept and lock-in (``analyse``, a comparison profile); and the ``paper`` profile's own analysis
(``analyse_paper``: full data's peak, time to it, the detectors replayed).

Both read only the runs of their design (``plan.in_design``)."""

import math
import statistics

from .plan import in_design, jobs, paper_jobs
from .stats import interval, mean_sd, verdict


def final(run):
    return run["curve"][-1]["rsum"]


def final_rare(run):
    return run["curve"][-1].get("rsum_rare")


def trained(run):
    return sum(e["kept"] for e in run["epochs"])


def scored(run, scoring_free):
    return 0 if run["label"] in scoring_free else sum(e["candidates"] for e in run["epochs"])


def epoch_means(cells, key):
    """Per epoch, the mean over seeds of a selection field (``None`` where any seed lacks it)."""
    columns = zip(*[[e.get(key) for e in c["epochs"]] for c in cells])
    return [None if None in column else statistics.mean(column) for column in columns]


def precision_gain(cells):
    """Per epoch, the mean over seeds of the kept set's clean share minus the candidates'."""
    kept, base = epoch_means(cells, "audit_kept_precision"), epoch_means(cells, "audit_random_precision")
    return [None if k is None or b is None else k - b for k, b in zip(kept, base)]


def paired(cells, reference):
    """Paired differences of the final R@sum against ``reference`` (seed -> run)."""
    return [final(c) - final(reference[c["seed"]]) for c in cells if c["seed"] in reference]


def analyse(cfg, runs):
    runs = in_design(runs, jobs(cfg))
    by = {}
    for r in runs:
        by.setdefault((r["regime"], r["label"], r["ratio"]), {})[r["seed"]] = r
    report = {}
    for regime, spec in cfg["regimes"].items():
        full = by.get((regime, "full", None), {})
        full_finals = [final(r) for r in full.values()]
        peaks = [max(p["rsum"] for p in r["curve"]) for r in full.values()]
        declines = [max(p["rsum"] for p in r["curve"]) - final(r) for r in full.values()]
        m, sd, n = mean_sd(full_finals)
        info = {
            "n": n,
            "final": (m, sd),
            "peak": mean_sd(peaks)[:2],
            "decline": interval(declines),
            "sd_over_mean": (sd / m) if (sd is not None and m) else None,
            "peak_epochs": [max(r["curve"], key=lambda p: p["rsum"])["epoch"] for r in full.values()],
            "calibration": {
                s: {k: v for k, v in r["calibration"].items() if k != "table"}
                for s, r in full.items()
                if r.get("calibration")
            },
        }
        tables = {}
        for ratio in spec["ratios"]:
            rows, cells_of = [], {}
            for label in spec["methods"]:
                key = (regime, label, ratio if cfg["methods"][label][2] else None)
                if by.get(key):
                    cells_of[label] = by[key]
            random_runs = cells_of.get("random", {})
            baseline_means = {
                b: statistics.mean(final(c) for c in cells_of[b].values()) for b in cfg["baselines"] if b in cells_of
            }
            best = max(baseline_means, key=baseline_means.get) if baseline_means else None
            for label, cells in cells_of.items():
                cells = [cells[s] for s in sorted(cells)]
                # a run that switched after its last epoch measured no visit from its switch on
                lock = [c["lock_in"] for c in cells if c.get("lock_in") and c["lock_in"]["visits"]]
                rows.append(
                    {
                        "label": label,
                        "n": len(cells),
                        "final": mean_sd([final(c) for c in cells])[:2],
                        "vs_random": interval(paired(cells, random_runs)) if label != "random" else (None, None, 0),
                        "vs_best": interval(paired(cells, cells_of[best]))
                        if best and label != best
                        else (None, None, 0),
                        "vs_full": interval(paired(cells, full)) if label != "full" else (None, None, 0),
                        "rare": mean_sd([final_rare(c) for c in cells])[:2],
                        # (mean, sd, seeds measured): a run that switched after its last epoch has no visits
                        "rare_share": mean_sd([c["rare_share"]["rare_clean"] for c in cells]),
                        "clean_share": mean_sd([c["rare_share"]["clean"] for c in cells]),
                        "trained": statistics.mean(trained(c) for c in cells),
                        "scored": statistics.mean(scored(c, cfg["scoring_free"]) for c in cells),
                        # Only runs made since the bench measured it (f779913) know their CPU time.
                        "cpu": [c["cpu_seconds"] for c in cells if c.get("cpu_seconds") is not None],
                        "switches": [c.get("switch") for c in cells],
                        # The mechanism behind a method that never learns: the spread of its
                        # CLIPScores, and the mean per-sample loss where the method scores by it.
                        "spread": epoch_means(cells, "clipscore_std"),
                        "loss": epoch_means(cells, "mean_loss"),
                        "precision_gain": precision_gain(cells),
                        "lock_in": {
                            group: {
                                k: mean_sd([x[group][k] for x in lock if x[group][k] is not None])[:2]
                                for k in ("kept_rate", "kept_after_kept", "kept_after_dropped")
                            }
                            for group in ("clean", "noisy")
                        }
                        if lock
                        else None,
                        "lock_in_seeds": len(lock),
                    }
                )
            for row in rows:
                row["verdict_random"] = verdict(row["vs_random"], m, cfg["equivalence"])
                row["verdict_best"] = verdict(row["vs_best"], m, cfg["equivalence"])
            tables[ratio] = {"best_baseline": best, "rows": rows}
        regime_runs = [r for r in runs if r["regime"] == regime]
        cpu = [r["cpu_seconds"] for r in regime_runs if r.get("cpu_seconds") is not None]
        report[regime] = {
            "full": info,
            "tables": tables,
            "time": {
                "runs": len(regime_runs),
                "wall_hours": sum(r["seconds"] or 0 for r in regime_runs) / 3600,
                "cpu_runs": len(cpu),
                "cpu_hours": sum(cpu) / 3600,
            },
        }
    return report


# ----------------------------------------------------------------------------- the paper profile (frozen)


def switch_epoch(run):
    """First epoch of selection by delta (0-based); None: never (random, full, undetected auto)."""
    found = [e.get("selection_from_epoch") for e in run["epochs"] if e.get("selection_from_epoch") is not None]
    return found[-1] if found else None


def kept_precision_gain(run, after):
    """Mean over the epochs >= ``after`` of kept-set precision minus the random base rate."""
    rows = [e for e in run["epochs"] if e["epoch"] - 1 >= after and e.get("audit_kept_precision") is not None]
    if not rows:
        return None
    return statistics.mean(e["audit_kept_precision"] - e["audit_random_precision"] for e in rows)


def gap_peak(groups):
    """The label-based early-learning point: the epoch where the clean-noisy mean CLIPScore gap peaks."""
    if not groups:
        return None
    return max(groups, key=lambda g: g["clean_mean"] - g["noisy_mean"])["epoch"]


# The detector as the paper profile's runs had it (its report is frozen): one measurement at a
# time, watching from the first (the arming gain and the trailing mean came after, in 72095d6).
PAPER_DETECTOR = dict(window=1, min_gain=-math.inf)


def replay_detectors(run, options=PAPER_DETECTOR):
    """Each detector replayed on one run's per-epoch signals: signal -> (early-learning point,
    epoch it fired) or None. On a ``random`` run this is where an ``auto`` warm-up of that
    signal ends, since the two runs are identical until then."""
    from open_clip_dissect.core.early_learning import SIGNALS, EarlyLearningDetector, EpochSignals

    rsum = {p["epoch"]: p["rsum"] for p in run["curve"]}
    found = {}
    for signal in SIGNALS:
        detector = EarlyLearningDetector(signal, **options)
        measured = False
        for e in run["epochs"]:
            signals = EpochSignals(
                mean_loss=e.get("mean_loss"), clipscore_std=e.get("clipscore_std"), retrieval=rsum.get(e["epoch"])
            )
            measured |= detector.value(signals) is not None
            detector.update(e["epoch"] - 1, signals)
        if measured:  # (a random run does not compute the loss)
            found[signal] = (
                (detector.detected_epoch, detector.fired_epoch) if detector.fired_epoch is not None else None
            )
    return found


def analyse_paper(cfg, runs):
    runs = in_design(runs, paper_jobs(cfg))
    by = {(r["regime"], r["label"], r["seed"]): r for r in runs}
    report = {}
    for regime, spec in cfg["regimes"].items():
        seeds = [s for s in cfg["seeds"] if (regime, "full", s) in by]
        full_info = []
        for s in seeds:
            curve = by[(regime, "full", s)]["curve"]
            peak = max(curve, key=lambda c: c["rsum"])
            full_info.append(
                {
                    "seed": s,
                    "peak_epoch": peak["epoch"],
                    "peak": peak["rsum"],
                    "final": curve[-1]["rsum"],
                    "decline": peak["rsum"] - curve[-1]["rsum"],
                    "gap_peak_full": gap_peak(by[(regime, "full", s)]["groups"]),
                    "gap_peak_random": gap_peak(by[(regime, "random", s)]["groups"])
                    if (regime, "random", s) in by
                    else None,
                    "replayed_random": replay_detectors(by[(regime, "random", s)])
                    if (regime, "random", s) in by
                    else None,
                }
            )
        rows = []
        for label in spec["methods"]:
            cells = [by[(regime, label, s)] for s in cfg["seeds"] if (regime, label, s) in by]
            if not cells:
                continue
            finals = [c["curve"][-1]["rsum"] for c in cells]
            paired = [
                c["curve"][-1]["rsum"] - by[(regime, "random", c["seed"])]["curve"][-1]["rsum"]
                for c in cells
                if (regime, "random", c["seed"]) in by
            ]
            versus_full = [
                c["curve"][-1]["rsum"] - by[(regime, "full", c["seed"])]["curve"][-1]["rsum"]
                for c in cells
                if (regime, "full", c["seed"]) in by
            ]
            to_peak, trained_to_peak = [], []
            for c in cells:
                info = next((f for f in full_info if f["seed"] == c["seed"]), None)
                hit = next((p for p in c["curve"] if info and p["rsum"] >= info["peak"]), None) if info else None
                to_peak.append(hit["epoch"] if hit else None)
                trained_to_peak.append(
                    sum(e["kept"] for e in c["epochs"] if e["epoch"] <= hit["epoch"]) if hit else None
                )
            switches = [switch_epoch(c) for c in cells]
            gains = []
            for c, sw in zip(cells, switches):
                after = sw if sw is not None else (spec["epochs"] if c["label"].startswith("dissect") else 0)
                gains.append(kept_precision_gain(c, after))
            signals = sorted({c["auto_signal"] for c in cells if c.get("auto_signal")})
            rows.append(
                {
                    "label": label + (f" ({', '.join(signals)})" if label.endswith("-auto") else ""),
                    "n": len(cells),
                    "final": mean_sd(finals),
                    "paired": interval(paired),
                    "vs_full": interval(versus_full),
                    "best": mean_sd([max(p["rsum"] for p in c["curve"]) for c in cells]),
                    "to_peak": to_peak,
                    "trained_to_peak": trained_to_peak,
                    "switches": switches,
                    "precision_gain": mean_sd(gains),
                    "kept_fraction": mean_sd(
                        [sum(e["kept"] for e in c["epochs"]) / sum(e["candidates"] for e in c["epochs"]) for c in cells]
                    ),
                }
            )
        report[regime] = {"full": full_info, "rows": rows}
    return report
