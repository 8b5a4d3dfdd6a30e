"""From cached runs to the numbers a report prints: per method and ratio the final R@sum (the mean
of a run's last ``final_window`` evaluations), paired intervals against ``random``, the best
baseline and full data, with their verdicts, cost, shares kept (junk captions too, where the runs
measured them) and lock-in (``analyse``, a comparison profile); for a profile with a calibration
regime (``real``), the calibration, the main regime's length rule (``main_length``), the premise
table and the CPU kernels (``analyse_real``); and the ``paper`` profile's own analysis
(``analyse_paper``: full data's peak, time to it, the detectors replayed).

Both read only the runs of their design (``plan.in_design``)."""

import json
import math
import statistics

from .plan import authors_warmup, in_design, job_of, jobs, paper_jobs, run_name
from .profiles.real import CALIBRATION_EPOCHS, LEAST_EPOCHS
from .stats import interval, mean_sd, verdict


def final(run, window=1):
    """A run's final R@sum: the mean of its last ``window`` evaluations (a profile's
    ``final_window``; 1, the last evaluation, where it names none)."""
    if window == 1:
        return run["curve"][-1]["rsum"]
    return statistics.mean(p["rsum"] for p in run["curve"][-window:])


def final_rare(run, window=1):
    """The same on the rare queries (None where an evaluation of the window lacks them)."""
    values = [p.get("rsum_rare") for p in run["curve"][-window:]]
    if None in values:
        return None
    return values[0] if window == 1 else statistics.mean(values)


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


def paired(cells, reference, window=1):
    """Paired differences of the final R@sum against ``reference`` (seed -> run)."""
    return [final(c, window) - final(reference[c["seed"]], window) for c in cells if c["seed"] in reference]


def analyse(cfg, runs):
    runs = in_design(runs, jobs(cfg))
    window = final_window(cfg)
    by = {}
    for r in runs:
        by.setdefault((r["regime"], r["label"], r["ratio"]), {})[r["seed"]] = r
    report = {}
    for regime, spec in cfg["regimes"].items():
        full = by.get((regime, "full", None), {})
        full_finals = [final(r, window) for r in full.values()]
        peaks = [max(p["rsum"] for p in r["curve"]) for r in full.values()]
        declines = [max(p["rsum"] for p in r["curve"]) - final(r, window) for r in full.values()]
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
                b: statistics.mean(final(c, window) for c in cells_of[b].values())
                for b in cfg["baselines"]
                if b in cells_of
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
                        "final": mean_sd([final(c, window) for c in cells])[:2],
                        "vs_random": interval(paired(cells, random_runs, window))
                        if label != "random"
                        else (None, None, 0),
                        "vs_best": interval(paired(cells, cells_of[best], window))
                        if best and label != best
                        else (None, None, 0),
                        "vs_full": interval(paired(cells, full, window)) if label != "full" else (None, None, 0),
                        "rare": mean_sd([final_rare(c, window) for c in cells])[:2],
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
                junk = [c["junk_share"] for c in cells if c.get("junk_share")]
                if junk:  # real pairs: the clean-labelled pairs with junk captions, against the other clean ones
                    rows[-1]["junk_share"] = mean_sd([j["junk"] for j in junk])
                    rows[-1]["junk_clean_share"] = mean_sd([j["clean"] for j in junk])
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


def final_window(cfg):
    """How many of a run's last evaluations its final R@sum averages (``final_window``; 1 if the
    profile names none, as ``web``)."""
    return cfg.get("final_window", 1)


# ----------------------------------------------------------------------------- real pairs: calibration, premise

# Epochs in this part are counted from 1, as a run's length is: epoch n is the n-th epoch of
# training (the records' 0-based epoch n - 1, scored during it; its R@sum is evaluated at its end).


def calibration_regimes(cfg):
    """The regimes that calibrate the main regime's length (``calibration=True``, the ``real`` profile)."""
    return [regime for regime, spec in cfg["regimes"].items() if spec.get("calibration")]


def full_runs(runs, regime):
    """The full-data runs of ``regime`` that carry their records' calibration table, by seed."""
    return sorted(
        (r for r in runs if r["regime"] == regime and r["label"] == "full" and r.get("calibration")),
        key=lambda r: r["seed"],
    )


def main_length(calibration_runs, least=LEAST_EPOCHS, most=CALIBRATION_EPOCHS):
    """The ``real`` profile's rule for its main regime's length, on the calibration runs (full
    data): E = the first epoch at which the clean-noisy gap of the mean CLIPScores, averaged over
    the runs, has fallen to half of its peak or below; at least ``least``, and ``most`` if it
    never does (nor where the gap never rises above zero: there is nothing to halve).

    Returns the rule's working: the seed-mean gap per epoch, its peak (epoch, value), the epoch
    where it halved (None: never), E, and the seeds and epochs it read."""
    tables = [r["calibration"]["table"] for r in calibration_runs]
    if not tables:
        return None
    epochs = min(len(t) for t in tables)  # (a finished run has every epoch; the shortest rules)
    gap = [statistics.mean(t[i]["gap"] for t in tables) for i in range(epochs)]
    top = max(range(epochs), key=gap.__getitem__)  # the first epoch of the highest gap
    halved = None
    if gap[top] > 0:
        halved = next((i + 1 for i in range(top, epochs) if gap[i] <= gap[top] / 2), None)
    return {
        "seeds": [r["seed"] for r in calibration_runs],
        "epochs": epochs,
        "gap": gap,
        "peak_epoch": top + 1,
        "peak": gap[top],
        "halved_epoch": halved,
        "length": most if halved is None else max(least, halved),
        "least": least,
        "most": most,
    }


CALIBRATION_COLUMNS = ("clean", "noisy", "gap", "auroc", "clean_junk", "junk_auroc")


def calibration_table(calibration_runs):
    """Per epoch, the mean over the runs of the records' measures (``CALIBRATION_COLUMNS``; None
    where a run lacks one, or it is NaN) and of the test R@sum evaluated at the epoch's end."""
    tables = [r["calibration"]["table"] for r in calibration_runs]
    rsum = [{p["epoch"]: p["rsum"] for p in r["curve"]} for r in calibration_runs]
    rows = []
    for i in range(min(len(t) for t in tables)):
        row = {"epoch": i + 1}
        for key in CALIBRATION_COLUMNS:
            values = [t[i].get(key) for t in tables]
            ok = None not in values and not any(math.isnan(v) for v in values)
            row[key] = statistics.mean(values) if ok else None
        values = [r.get(i + 1) for r in rsum]
        row["rsum"] = None if None in values else statistics.mean(values)
        rows.append(row)
    return rows


def analyse_calibration(cfg, runs):
    """Per calibration regime: its seeds, the per-epoch table and the length rule; ``complete``
    says whether every seed of its design ran (the rule's E is final only then)."""
    out = {}
    for regime in calibration_regimes(cfg):
        spec, cells = cfg["regimes"][regime], full_runs(runs, regime)
        if not cells:
            out[regime] = None
            continue
        rule = main_length(cells, most=spec["epochs"])
        out[regime] = {
            "seeds": [r["seed"] for r in cells],
            "complete": sorted(r["seed"] for r in cells) == sorted(spec["seeds"]) and rule["epochs"] == spec["epochs"],
            "table": calibration_table(cells),
            "rule": rule,
        }
    return out


def premise_row(run, window):
    """The premise measured on one full-data run: where its clean pairs' mean CLIPScore peaks, its
    drop from there to the last epoch, the noisy pairs' rise over the same epochs, the gap's peak
    against the end of the quarter warm-up, and its R@sum's peak and decline to the final number."""
    table = run["calibration"]["table"]
    clean, noisy = [t["clean"] for t in table], [t["noisy"] for t in table]
    gap = [c - n for c, n in zip(clean, noisy)]
    epochs = len(table)
    top = max(range(epochs), key=clean.__getitem__)
    gap_top = max(range(epochs), key=gap.__getitem__)
    peak = max(run["curve"], key=lambda p: p["rsum"])
    row = {
        "regime": run["regime"],
        "seed": run["seed"],
        "epochs": epochs,
        "clean_peak_epoch": top + 1,
        "clean_peak": clean[top],
        "clean_drop": clean[top] - clean[-1],
        "noisy_rise": noisy[-1] - noisy[top],
        "gap_peak_epoch": gap_top + 1,
        "warmup_end": authors_warmup(epochs),
        "rsum_peak": peak["rsum"],
        "rsum_peak_epoch": peak["epoch"],
        "final": final(run, window),
        "decline": peak["rsum"] - final(run, window),
    }
    row["early"] = top + 1 <= epochs - epochs // 4  # before the last quarter of the epochs
    row["premise"] = row["early"] and row["clean_drop"] > 0 and row["noisy_rise"] > 0
    # What delta = hist - curr reads: not the clean pairs' absolute drop (Fig. 3b) but which pairs
    # rise faster. Once the gap shrinks, the noisy pairs' scores rise faster than the clean ones'
    # (Fig. 3c: the clean pairs fall against the epoch's mean), and delta ranks them last.
    row.update(gap_peak=gap[gap_top], gap_end=gap[-1])
    row["gap_shrinks"] = gap_top + 1 <= epochs - epochs // 4 and gap[-1] < gap[gap_top]
    return row


def analyse_premise(cfg, runs):
    """Per regime with full-data runs: one premise row a seed, and over the seeds the mean with
    its 95% t-interval of the R@sum decline, the clean drop and the noisy rise."""
    window, out = final_window(cfg), {}
    for regime in cfg["regimes"]:
        rows = [premise_row(r, window) for r in full_runs(runs, regime)]
        if rows:
            out[regime] = {
                "rows": rows,
                "decline": interval([r["decline"] for r in rows]),
                "clean_drop": interval([r["clean_drop"] for r in rows]),
                "noisy_rise": interval([r["noisy_rise"] for r in rows]),
                "premise_seeds": [r["seed"] for r in rows if r["premise"]],
                "gap_shrink_seeds": [r["seed"] for r in rows if r["gap_shrinks"]],
            }
    return out


def kernels(cfg, runs):
    """Which CPU kernels the runs computed with: the count of each, the kernels expected (AVX2
    where the profile pins them with ``--deterministic``, else the most common) and the runs
    that differ, by name (a run that predates the log line counts as None)."""
    counts = {}
    for r in runs:
        counts[r.get("cpu_kernels")] = counts.get(r.get("cpu_kernels"), 0) + 1
    expected = "AVX2" if cfg.get("deterministic") else max(counts, key=counts.get, default=None)
    differ = sorted(
        run_name(*job_of(r)) + f" ({r.get('cpu_kernels')})" for r in runs if r.get("cpu_kernels") != expected
    )
    return {
        "counts": {str(k): v for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))},
        "expected": expected,
        "differ": differ,
    }


def ranking_auroc(run, after):
    """Mean over the epochs >= ``after`` (0-based) of how well the method's ranking score put the
    clean pairs above the noisy ones (the audit's AUROC; 0.5 = chance)."""
    return mean_of(e.get("audit_auroc") for e in run["epochs"] if e["epoch"] - 1 >= after)


def from_switch(cfg, runs):
    """Per regime (not a calibration), ratio and method, mean and sd over seeds of two means over
    the epochs from a run's switch on (every epoch for a method that never switches, or a DISSect
    run whose switch never came): ``gain``, how much cleaner the kept sets were than their
    candidates, and ``auroc``, how well the ranking score separated clean from noisy pairs."""
    calibrating = set(calibration_regimes(cfg))
    values = {}
    for r in runs:
        if r["regime"] not in calibrating and r["label"] != "full":
            after = switch_epoch(r) or 0
            cell = values.setdefault(r["regime"], {}).setdefault(str(r["ratio"]), {}).setdefault(r["label"], {})
            cell.setdefault("gain", []).append(kept_precision_gain(r, after))
            cell.setdefault("auroc", []).append(ranking_auroc(r, after))
    return {
        regime: {
            ratio: {label: {k: mean_sd(v) for k, v in cell.items()} for label, cell in labels.items()}
            for ratio, labels in ratios.items()
        }
        for regime, ratios in values.items()
    }


def score_curves(cfg, runs):
    """Per regime (not a calibration), ratio and method: per epoch (0-based), the mean over the
    seeds that recorded it of the clean and noisy pairs' mean CLIPScore and the absolute-score
    AUROC (selection runs: ``scores``; full data: its calibration table; runs made before the
    curve was kept have none), with those seeds."""
    calibrating = set(calibration_regimes(cfg))
    cells = {}
    for r in runs:
        curve = r.get("scores") or (r.get("calibration") or {}).get("table")
        if r["regime"] not in calibrating and curve:
            key = str(r["ratio"]) if r["ratio"] is not None else "all"
            cells.setdefault(r["regime"], {}).setdefault(key, {}).setdefault(r["label"], []).append((r["seed"], curve))
    out = {}
    for regime, ratios in cells.items():
        for ratio, labels in ratios.items():
            for label, seeded in labels.items():
                n = min(len(curve) for _, curve in seeded)
                out.setdefault(regime, {}).setdefault(ratio, {})[label] = {
                    "seeds": sorted(seed for seed, _ in seeded),
                    **{
                        k: [statistics.mean(curve[i][k] for _, curve in seeded) for i in range(n)]
                        for k in ("clean", "noisy", "auroc")
                    },
                }
    return out


def mean_of(values):
    """The mean of the values that are numbers (None and NaN left out); None if there are none."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.mean(kept) if kept else None


def delta_replays(cfg, runs):
    """Per regime (not a calibration), ratio and method whose choices ignore the scores (full
    data under "all", as it joins every ratio; ``random`` at its ratio; the runs that kept the
    replay): per epoch (0-based), the mean over seeds of the replayed deltas' AUROC
    (``record_measures.delta_replay``), and the mean over the epochs that DISSect's ranking AUROC
    reads (from the authors' warm-up for the warm-up's delta, every epoch for the moving
    average's), as ``ranking_auroc`` reads them, then over seeds (mean, sd); and the last epoch's
    (the mean over every epoch hides a turn from anti-clean to clean)."""
    calibrating = set(calibration_regimes(cfg))
    cells = {}
    for r in runs:
        if r["regime"] not in calibrating and r.get("replay"):
            key = str(r["ratio"]) if r["ratio"] is not None else "all"
            cells.setdefault(r["regime"], {}).setdefault(key, {}).setdefault(r["label"], []).append(r)
    out = {}
    for regime, ratios in cells.items():
        warmup = authors_warmup(cfg["regimes"][regime]["epochs"])
        for ratio, labels in ratios.items():
            for label, seeded in labels.items():
                n = min(len(r["replay"]) for r in seeded)
                cell = {"seeds": sorted(r["seed"] for r in seeded)}
                for kind, start in (("warmup", warmup), ("mome", 0)):
                    key = f"{kind}_auroc"
                    cell[key] = [
                        None if i < start else statistics.mean(r["replay"][i][key] for r in seeded) for i in range(n)
                    ]
                    cell[f"{kind}_last"] = cell[key][-1] if n else None
                    cell[f"{kind}_mean"] = mean_sd(
                        [mean_of(row.get(key) for row in r["replay"][start:]) for r in seeded]
                    )
                out.setdefault(regime, {}).setdefault(ratio, {})[label] = cell
    return out


def replays_at(replays, ratio):
    """The replayed methods at ``ratio`` from one regime's ``delta_replays``, full data (kept
    under "all") first."""
    return {**replays.get("all", {}), **replays.get(str(ratio), {})}


def identical_runs(cfg, runs):
    """Per regime (not a calibration) and ratio: the sets of methods whose runs on one seed
    evaluated to the same test curve, epoch for epoch, as [seed, [labels]]. With
    ``--deterministic`` that happens when two methods made the same choices, as
    dissect-warmup-auto does when its detector switches at the fixed epoch: such a pair's
    paired difference is exactly 0 on that seed, not an independent measurement."""
    calibrating = set(calibration_regimes(cfg))
    groups = {}
    for r in runs:
        if r["regime"] not in calibrating and r["label"] != "full" and r.get("curve"):
            key = (r["regime"], str(r["ratio"]), r["seed"], json.dumps(r["curve"], sort_keys=True))
            groups.setdefault(key, []).append(r["label"])
    out = {}
    for (regime, ratio, seed, _), labels in sorted(groups.items(), key=lambda kv: kv[0][:3]):
        if len(labels) > 1:
            out.setdefault(regime, {}).setdefault(ratio, []).append([seed, sorted(labels)])
    return out


def curve_of(curves, ratio, label):
    """A method's score curve at ``ratio`` from one regime's ``score_curves``: full data and a
    method that sets its own count are kept under "all" (they join every ratio)."""
    return curves.get(str(ratio), {}).get(label) or curves.get("all", {}).get(label)


def analyse_real(cfg, runs):
    """The parts of a report on real pairs beyond the comparison (``analyse``): the final window,
    the calibration and its length rule, the premise table, the kept sets' precision gain and the
    ranking's AUROC from the switch on, and the CPU kernels."""
    runs = in_design(runs, jobs(cfg))
    return {
        "final_window": final_window(cfg),
        "calibration": analyse_calibration(cfg, runs),
        "premise": analyse_premise(cfg, runs),
        "from_switch": from_switch(cfg, runs),
        "scores": score_curves(cfg, runs),
        "identical": identical_runs(cfg, runs),
        "replay": delta_replays(cfg, runs),
        "cpu_kernels": kernels(cfg, runs),
    }


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
