#!/usr/bin/env python
"""``make bench PROFILE=paper``: DISSect where the paper says it wins, with seeds and intervals.

The design below was fixed before any of its results were seen; do not change it to favour a
method (add a new profile instead).

- Regimes (synthetic pairs, 40% noisy; the clean test split has 500 images x 5 captions):
  ``memorising-shuffle`` and ``memorising-partial``: 1,000 pairs, batch 128, 40 epochs, where full
  data peaks and then memorises the noise (the report states the peak epoch, the peak and the
  decline); ``learning``: 6,000 pairs, batch 256, 4 epochs, still learning at the end.
- Seeds 0, 1, 2: each seed draws its own data set and initialisation; every method sees the same
  data per seed, so differences against ``random`` are paired.
- Ratio r = 0.5. Methods: ``full`` (``--selection observe``: trains on everything and records
  every score), ``random``, ``dissect-warmup`` with the authors' fixed warm-up (a quarter of the
  epochs: 10 of 40), ``dissect-warmup`` with an ``auto`` warm-up, ``dissect-mome`` (no warm-up,
  the paper's variant) and ``dissect-mome`` gated by ``auto``.
- The three detectors of ``auto`` are compared on ``memorising-shuffle`` (each one named). The
  default of ``--dissect-auto-signal`` is then chosen on those numbers, and
  ``memorising-partial`` and ``learning`` run ``auto`` with that default: a held-out check of the
  choice. Each run's JSON records the signal it used.
- Retrieval R@sum every 2 epochs in the memorising regimes (every epoch in ``learning``) and after
  the last one.
- Cost: 60 runs, about 2 hours on 2 CPU cores (measured 2026-12-01: ``memorising-shuffle`` first,
  about 1 hour).

Each run's results are cached in ``runs/<name>.json``: an interrupted bench resumes where it
stopped, and the report covers whatever has finished. Runs use one thread each and
``parallel`` of them at a time (accuracy does not depend on timing; the wall-clock columns of
this profile are not comparable across runs).
"""

import json
import math
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)
import bench_data  # noqa: E402

MEMORISING = dict(train=1000, test=500, epochs=40, batch=128, val_every=2)
AUTO = ["--dissect-warmup-epochs", "auto"]
MOME_AUTO = ["--dissect-mome-warmup-epochs", "auto"]
# label: (strategy, extra flags); "{fixed}" is a quarter of the regime's epochs
METHODS = {
    "full": ("observe", []),
    "random": ("random", []),
    "dissect-warmup-fixed": ("dissect-warmup", ["--dissect-warmup-epochs", "{fixed}"]),
    "dissect-warmup-auto": ("dissect-warmup", AUTO),  # the default signal
    "dissect-warmup-auto-spread": ("dissect-warmup", AUTO + ["--dissect-auto-signal", "spread"]),
    "dissect-warmup-auto-loss": ("dissect-warmup", AUTO + ["--dissect-auto-signal", "loss"]),
    "dissect-warmup-auto-retrieval": ("dissect-warmup", AUTO + ["--dissect-auto-signal", "retrieval"]),
    "dissect-mome": ("dissect-mome", []),
    "dissect-mome-auto": ("dissect-mome", MOME_AUTO),  # the default signal
    "dissect-mome-auto-spread": ("dissect-mome", MOME_AUTO + ["--dissect-auto-signal", "spread"]),
}
# In order of priority: the runs go method by method (all seeds), regime by regime.
COMPARE_DETECTORS = (
    "full",
    "random",
    "dissect-warmup-fixed",
    "dissect-warmup-auto-retrieval",
    "dissect-mome",
    "dissect-warmup-auto-spread",
    "dissect-warmup-auto-loss",
    "dissect-mome-auto-spread",
)
HELD_OUT = ("full", "random", "dissect-warmup-fixed", "dissect-warmup-auto", "dissect-mome", "dissect-mome-auto")
PAPER = dict(
    regimes={
        "memorising-shuffle": dict(MEMORISING, noise="shuffle", methods=COMPARE_DETECTORS),
        "memorising-partial": dict(MEMORISING, noise="partial", methods=HELD_OUT),
        "learning": dict(train=6000, test=500, noise="shuffle", epochs=4, batch=256, val_every=1, methods=HELD_OUT),
    },
    seeds=(0, 1, 2),
    ratio=0.5,
    noise_rate=0.4,
    model="dissect-vit-tiny",
    lr=1e-3,
    parallel=2,
    methods=METHODS,
    recorded=("full", "random"),  # --selection-record: the per-sample scores of Fig. 3
)
# Two-sided 95% Student t quantiles by degrees of freedom.
# Student t 0.975 quantiles by degrees of freedom (tables); beyond 30, t95() expands around z.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
T95.update({10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110})
T95.update({18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060})
T95.update({26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042})


def t95(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (Cornish-Fisher past the
    table: within 0.001 of the exact value there, unlike the normal 1.96)."""
    if df in T95:
        return T95[df]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def log(msg):
    print(msg, flush=True)


def run_name(regime, label, seed):
    return f"{regime}-{label}-s{seed}"


def make_data(root, regime, spec, seed, noise_rate):
    # The val split (the retrieval detector's held-out data) leaves train and test byte-identical.
    arguments = bench_data.data_arguments(
        train=spec["train"],
        test=spec["test"],
        seed=seed,
        noise_rate=noise_rate,
        noise_kind=spec["noise"],
        val=spec.get("val", 500),
    )
    return bench_data.make_data(root, f"{regime}-s{seed}", arguments)


def command(cfg, spec, manifest, logs, name, strategy, flags, seed, record):
    fixed = str(max(1, spec["epochs"] // 4))
    cmd = bench_data.training_command(
        cfg["model"],
        spec["batch"],
        cfg["lr"],
        10,
        seed,
        spec["epochs"],
        manifest,
        logs,
        name,
        strategy,
        val_every=spec["val_every"],
    )
    cmd += [f.replace("{fixed}", fixed) for f in flags]
    if auto_signal(strategy, flags) == "retrieval":  # watches the val split, never the reported test split
        cmd += ["--val-data", manifest["splits"]["val"]["pattern"]]
    if strategy != "observe":
        cmd += ["--ratio", str(cfg["ratio"])]
    if record:
        cmd += ["--selection-record", record]
    return cmd


def run_one(cfg, root, regime, spec, label, seed):
    """Train one cell (or read its cached result)."""
    name = run_name(regime, label, seed)
    cached = os.path.join(root, "runs", f"{name}.json")
    if os.path.isfile(cached):
        with open(cached) as f:
            return json.load(f)
    strategy, flags = cfg["methods"][label]
    manifest = make_data(root, regime, spec, seed, cfg["noise_rate"])
    logs = os.path.join(root, "logs")
    shutil.rmtree(os.path.join(logs, name), ignore_errors=True)
    record = os.path.join(root, "records", name) if label in cfg["recorded"] else None
    if record:
        shutil.rmtree(record, ignore_errors=True)
    started = time.time()
    env = bench_data.run_env(1)
    bench_data.run_training(name, command(cfg, spec, manifest, logs, name, strategy, flags, seed, record), env)
    run_dir = os.path.join(logs, name)
    curve, epochs, events = bench_data.read_run(run_dir)
    curve = [r for r in curve if "retrieval_R@sum" in r]
    out = {
        "regime": regime,
        "label": label,
        "seed": seed,
        "strategy": strategy,
        "seconds": time.time() - started,
        "auto_signal": auto_signal(strategy, flags),
        "curve": [{"epoch": r["epoch"], "rsum": r["retrieval_R@sum"]} for r in curve],
        "epochs": epochs,
        "events": events,
        "groups": record_groups(record, spec["epochs"]) if record else None,
    }
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(cached + ".tmp", cached)
    shutil.rmtree(run_dir, ignore_errors=True)  # the cached json holds what the report reads
    return out


def auto_signal(strategy, flags):
    """The signal an ``auto`` warm-up watches in this run (the flag, else the default); None
    without an ``auto`` warm-up."""
    if "auto" not in flags:
        return None
    if "--dissect-auto-signal" in flags:
        return flags[flags.index("--dissect-auto-signal") + 1]
    from open_clip_dissect.core.strategies import strategy_class

    return next(o.default for o in strategy_class(strategy).options if o.flag == "--dissect-auto-signal")


def record_groups(record, epochs):
    """Per epoch from the records: clean and noisy CLIPScore (mean, std) and the histogram of
    each at every epoch (20 bins over [0, 100])."""
    import numpy as np

    from open_clip_dissect.openclip.training.selection_record import read_epoch, recorded_epochs

    groups = []
    for epoch, files in recorded_epochs(record):
        frame = read_epoch(files, ["curr", "noisy"])
        row = {"epoch": epoch, "all_mean": float(frame["curr"].mean()), "all_std": float(frame["curr"].std(ddof=0))}
        for name, mask in (("clean", ~frame["noisy"].astype(bool)), ("noisy", frame["noisy"].astype(bool))):
            values = frame.loc[mask, "curr"].to_numpy()
            row[f"{name}_mean"], row[f"{name}_std"] = float(values.mean()), float(values.std())
            row[f"{name}_hist"] = np.histogram(values, bins=20, range=(0, 100))[0].tolist()
        groups.append(row)
    return groups


def run_all(cfg, root):
    jobs = [
        (regime, spec, label, seed)
        for regime, spec in cfg["regimes"].items()
        for label in spec["methods"]
        for seed in cfg["seeds"]
    ]
    done = []
    log(f"[paper] {len(jobs)} runs, {cfg['parallel']} at a time; results cached in {root}/runs")

    def one(job):
        regime, spec, label, seed = job
        out = run_one(cfg, root, regime, spec, label, seed)
        done.append(out)
        log(
            f"[paper] {len(done)}/{len(jobs)} {run_name(regime, label, seed)}: final R@sum "
            f"{out['curve'][-1]['rsum']:.1f} ({out['seconds']:.0f} s){' | ' + out['events'][0] if out['events'] else ''}"
        )
        return out

    # The data sets are made first, one at a time (the runs then read them in parallel).
    for regime, spec in cfg["regimes"].items():
        for seed in cfg["seeds"]:
            make_data(root, regime, spec, seed, cfg["noise_rate"])
    with ThreadPoolExecutor(cfg["parallel"]) as pool:
        return list(pool.map(one, jobs))


# ----------------------------------------------------------------------------- analysis


def mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None), len(values)


def interval(values):
    """Mean and 95% t-interval half-width (None with fewer than 2 values)."""
    m, sd, n = mean_sd(values)
    if n < 2:
        return m, None, n
    return m, t95(n - 1) * sd / math.sqrt(n), n


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


def replay_detectors(run):
    """Each detector (default options) replayed on one run's per-epoch signals: signal ->
    (early-learning point, epoch it fired) or None. On a ``random`` run this is where an ``auto``
    warm-up of that signal ends, since the two runs are identical until then."""
    from open_clip_dissect.core.early_learning import SIGNALS, EarlyLearningDetector, EpochSignals

    rsum = {p["epoch"]: p["rsum"] for p in run["curve"]}
    found = {}
    for signal in SIGNALS:
        detector = EarlyLearningDetector(signal)
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


def analyse(cfg, runs):
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


# ----------------------------------------------------------------------------- report


def fmt(m, sd=None, digits=1):
    if m is None:
        return "-"
    return f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def write_report(cfg, root, report, runs, started):
    lines = [
        "# Benchmark, profile `paper`",
        "",
        f"Command: `make bench PROFILE=paper`; {time.strftime('%Y-%m-%d')}; {len(runs)} runs "
        f"({time.time() - started:.0f} s this invocation). Design (fixed before the results): see "
        f"`scripts/paper_bench.py`. Seeds {list(cfg['seeds'])}, r = {cfg['ratio']}, 40% noisy pairs, "
        f"{cfg['model']}, retrieval on 500 clean test images x 5 captions.",
        "",
        "Columns: `final` = R@sum after the last epoch, mean ± sd over seeds; `vs random` / `vs full` = "
        "the paired difference of the final R@sum on the same seeds, mean ± 95% t-interval half-width; "
        "`epochs to peak` = per seed, the first evaluated epoch whose R@sum reaches that seed's full-data "
        "peak (`-`: never); `trained` = samples back-propagated until then (thousands); `switch` = first "
        "epoch of selection by delta per seed (0-based; `-`: never); `precision gain` = kept-set precision "
        "minus the clean fraction, averaged over the epochs from the switch on (all epochs for random and "
        "full), mean ± sd over seeds.",
        "",
    ]
    for regime, part in report.items():
        spec = cfg["regimes"][regime]
        if not part["rows"]:
            lines += [f"## {regime}", "", "Not run yet.", ""]
            continue
        lines += [
            f"## {regime}",
            "",
            f"{spec['train']} pairs ({spec['noise']} noise), batch {spec['batch']}, {spec['epochs']} epochs.",
            "",
        ]
        if part["full"]:
            f = part["full"]
            lines.append(
                "Full data: peak R@sum "
                + fmt(*mean_sd([x["peak"] for x in f])[:2])
                + " at epochs "
                + ", ".join(str(x["peak_epoch"]) for x in f)
                + "; final "
                + fmt(*mean_sd([x["final"] for x in f])[:2])
                + "; decline peak to final "
                + fmt(*mean_sd([x["decline"] for x in f])[:2])
                + ". Clean-noisy CLIPScore gap peaks (label-based early-learning point, 0-based epoch): full data "
                + ", ".join(str(x["gap_peak_full"]) for x in f)
                + "; random r = 0.5 "
                + ", ".join(str(x["gap_peak_random"]) for x in f)
                + "."
            )
            replayed = [x["replayed_random"] for x in f if x["replayed_random"]]
            if replayed:
                lines.append("")
                lines.append(
                    "The detectors replayed on each seed's random r = 0.5 run (where an `auto` warm-up "
                    "with that signal would end; `point/fired`, `-`: never): "
                    + "; ".join(
                        f"{signal} "
                        + ", ".join("-" if r[signal] is None else f"{r[signal][0]}/{r[signal][1]}" for r in replayed)
                        for signal in replayed[0]
                    )
                    + " (the loss is not measured by a random run: see the "
                    "`auto-loss` runs)."
                )
            lines.append("")
        lines += [
            "| method | seeds | final | vs random | vs full | best | epochs to peak | trained (k) | switch | precision gain |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in part["rows"]:
            lines.append(
                f"| {r['label']} | {r['n']} | {fmt(*r['final'][:2])} | {fmt(*r['paired'][:2])} | {fmt(*r['vs_full'][:2])} | "
                f"{fmt(*r['best'][:2])} | {', '.join('-' if e is None else str(e) for e in r['to_peak'])} | "
                f"{', '.join('-' if t is None else f'{t / 1000:.0f}' for t in r['trained_to_peak'])} | "
                f"{', '.join('-' if s is None else str(s) for s in r['switches'])} | "
                f"{fmt(*r['precision_gain'][:2], digits=3)} |"
            )
        lines.append("")
    return bench_data.save_report(root, lines, report)


def plots(cfg, root, runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by = {(r["regime"], r["label"], r["seed"]): r for r in runs}

    palette = {label: f"C{i}" for i, label in enumerate(cfg["methods"])}  # one colour per method everywhere

    def band(ax, xs, ys, label, style="-"):
        ys = np.array(ys, dtype=float)
        m = np.nanmean(ys, axis=0)
        (line,) = ax.plot(xs, m, style, label=label, lw=1.3, **({"color": palette[label]} if label in palette else {}))
        if len(ys) > 1:
            sd = np.nanstd(ys, axis=0, ddof=1)
            ax.fill_between(xs, m - sd, m + sd, color=line.get_color(), alpha=0.15)

    for regime, spec in cfg["regimes"].items():
        fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
        for label in spec["methods"]:
            cells = [by[(regime, label, s)] for s in cfg["seeds"] if (regime, label, s) in by]
            if not cells:
                continue
            xs = [p["epoch"] for p in cells[0]["curve"]]
            band(axes[0], xs, [[p["rsum"] for p in c["curve"]] for c in cells], label)
            if label == "full":
                continue
            ep = [e["epoch"] - 1 for e in cells[0]["epochs"]]
            band(
                axes[1],
                ep,
                [
                    [
                        e.get("audit_kept_precision", np.nan) - e.get("audit_random_precision", np.nan)
                        for e in c["epochs"]
                    ]
                    for c in cells
                ],
                label,
            )
            band(axes[2], ep, [[e.get("audit_auroc", np.nan) for e in c["epochs"]] for c in cells], label)
        axes[0].set(title=f"{regime}: held-out R@sum (mean ± sd over seeds)", xlabel="epochs completed", ylabel="R@sum")
        axes[1].axhline(0, color="k", lw=0.8)
        axes[1].set(title="kept-set precision - clean fraction", xlabel="epoch (0-based)")
        axes[2].axhline(0.5, color="k", lw=0.8)
        axes[2].set(title="AUROC of the ranking score (clean vs noisy)", xlabel="epoch (0-based)")
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(root, f"curves_{regime}.png"), dpi=90)
        plt.close(fig)
        figure3(
            cfg,
            root,
            regime,
            [by[(regime, "full", s)] for s in cfg["seeds"] if (regime, "full", s) in by],
            [by[(regime, "random", s)] for s in cfg["seeds"] if (regime, "random", s) in by],
            band,
            plt,
            np,
        )


def figure3(cfg, root, regime, full, random_runs, band, plt, np):
    """The paper's Fig. 3 from the full-data (observe) runs: (a) the clean and noisy CLIPScore
    distributions early and late, (b) their means per epoch, (c) the same minus the epoch mean;
    plus the CLIPScore spread (the ``spread`` signal) under full data and random r = 0.5."""
    full = [r for r in full if r.get("groups")]
    if not full:
        return
    epochs = [g["epoch"] for g in full[0]["groups"]]
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.5))
    early, late = gap_peak(full[0]["groups"]), epochs[-1]  # where the clean pairs lead most, the end
    edges = np.linspace(0, 100, 21)
    for epoch, style in ((early, "--"), (late, "-")):
        for name, color in (("clean", "tab:blue"), ("noisy", "tab:red")):
            hist = np.sum([r["groups"][epoch][f"{name}_hist"] for r in full], axis=0)
            axes[0].step(
                edges[:-1], hist / hist.sum(), style, where="post", color=color, label=f"{name}, epoch {epoch}"
            )
    axes[0].set(title="(a) CLIPScore distributions (all seeds)", xlabel="CLIPScore", ylabel="fraction")
    axes[0].legend(fontsize=7)
    for name, color in (("clean", "tab:blue"), ("noisy", "tab:red")):
        band(axes[1], epochs, [[g[f"{name}_mean"] for g in r["groups"]] for r in full], name)
        band(axes[2], epochs, [[g[f"{name}_mean"] - g["all_mean"] for g in r["groups"]] for r in full], name)
    axes[1].set(title="(b) mean CLIPScore, full data", xlabel="epoch (0-based)")
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set(title="(c) mean CLIPScore minus the epoch mean", xlabel="epoch (0-based)")
    band(axes[3], epochs, [[g["clean_mean"] - g["noisy_mean"] for g in r["groups"]] for r in full], "gap, full data")
    band(axes[3], epochs, [[g["all_std"] for g in r["groups"]] for r in full], "spread (std), full data", "--")
    rand = [r for r in random_runs if r.get("groups")]
    if rand:
        band(
            axes[3],
            epochs,
            [[g["clean_mean"] - g["noisy_mean"] for g in r["groups"]] for r in rand],
            "gap, random r=0.5",
        )
        band(axes[3], epochs, [[g["all_std"] for g in r["groups"]] for r in rand], "spread (std), random r=0.5", "--")
    axes[3].set(title="clean - noisy gap and CLIPScore spread", xlabel="epoch (0-based)")
    axes[3].legend(fontsize=7)
    for ax in axes[1:3]:
        ax.legend(fontsize=7)
    fig.suptitle(f"{regime}: Fig. 3 of the paper from this product (mean ± sd over {len(full)} seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(root, f"fig3_{regime}.png"), dpi=90)
    plt.close(fig)


def main(root, cfg=None, report_only=False):
    cfg = cfg or PAPER
    os.makedirs(root, exist_ok=True)
    started = time.time()
    if report_only:
        if not os.path.isdir(os.path.join(root, "runs")):
            raise SystemExit(f"--report-only: no runs in {root}/runs (run the profile first, or pass --out)")
        runs = []
        for name in sorted(os.listdir(os.path.join(root, "runs"))):
            if name.endswith(".json"):
                with open(os.path.join(root, "runs", name)) as f:
                    runs.append(json.load(f))
    else:
        runs = run_all(cfg, root)
    plots(cfg, root, runs)
    text = write_report(cfg, root, analyse(cfg, runs), runs, started)
    print(text)
    return 0


def cli(argv=None):
    import argparse

    repo = os.path.dirname(SCRIPTS)
    p = argparse.ArgumentParser(
        description=(
            "The seeded benchmark profiles of make bench: 'paper' (this module's docstring; its design and "
            "report are frozen) and 'web' (scripts/web_bench.py: the web preset, every baseline, 5 seeds)."
        )
    )
    p.add_argument("--profile", choices=("paper", "web"), default="paper", help="Profile (default: paper).")
    p.add_argument(
        "--out", default=None, help="Output folder (default: bench/results/paper; docs/web_bench for --profile web)."
    )
    p.add_argument(
        "--cache",
        default=None,
        help="web: folder of the cached per-run results (default: <out>/runs, committed under docs/).",
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
        help="web: the calibration measures of the main regime's full-data run for --seed (trained "
        "if not cached; about 10 minutes on 2 cores), printed and written to --json (default: off).",
    )
    p.add_argument("--seed", type=int, default=0, help="--calibrate: the data and training seed (default: 0).")
    p.add_argument("--json", default=None, help="--calibrate: write the measures to this file (default: None).")
    args = p.parse_args(argv)
    if args.profile == "paper" and (args.calibrate or args.only or args.cache):
        p.error("--calibrate, --only and --cache belong to --profile web")
    if args.profile == "paper":
        return main(
            os.path.abspath(args.out or os.path.join(repo, "bench", "results", "paper")), report_only=args.report_only
        )
    import web_bench

    out = os.path.abspath(args.out or os.path.join(repo, "docs", "web_bench"))
    if args.only and args.only not in web_bench.WEB["regimes"]:
        p.error(f"--only: unknown regime {args.only!r}; choose from {', '.join(web_bench.WEB['regimes'])}")
    if args.calibrate:
        # refused before the ten minutes of training, not after them
        if not 0 <= args.seed < 2**32:
            p.error(f"--seed: must be between 0 and {2**32 - 1}, got {args.seed}")
        folder = os.path.dirname(os.path.abspath(args.json)) if args.json else None
        if folder and not os.path.isdir(folder):
            p.error(f"--json: folder {folder} does not exist")
        measures, table = web_bench.calibrate(
            web_bench.WEB,
            os.path.join(repo, "bench", "results", "web"),
            os.path.abspath(args.cache or os.path.join(out, "runs")),
            args.seed,
            args.json,
        )
        print(json.dumps(measures, indent=1))
        return 0
    return web_bench.main(
        out, cache=args.cache and os.path.abspath(args.cache), only=args.only, report_only=args.report_only
    )


if __name__ == "__main__":
    sys.exit(cli())
