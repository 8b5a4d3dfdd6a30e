"""The plots of a report (PNG, matplotlib's Agg): R@sum against cost, score spread and the
preset's calibration for a comparison profile (``plots``; a profile with a calibration regime,
``real``, draws that regime's length rule, ``calibration_<regime>.png``, and the paper's Fig. 3 of
every regime's full-data runs instead); curves with bands over seeds and the paper's Fig. 3 for the
``paper`` profile (``paper_plots``)."""

import math
import os

from .analysis import (
    analyse_real,
    calibration_regimes,
    calibration_table,
    curve_of,
    epoch_means,
    gap_peak,
    main_length,
    precision_gain,
    replays_at,
)

# the replayed runs' line styles, in the order they come (full data first); thin lines beside
# the methods' own (solid, or dashed for DISSect)
REPLAY_STYLES = (":", "-.", (0, (1, 4)), (0, (6, 2, 1, 2, 1, 2)))


def method_cells(cfg, regime_runs, label, ratio):
    """The runs of ``label`` at ``ratio`` (a method that sets its own count has none: it joins every ratio)."""
    wanted = ratio if cfg["methods"][label][2] else None
    return [r for r in regime_runs if r["label"] == label and r["ratio"] == wanted]


def plots(cfg, out, runs, real=None):
    """The comparison profile's plots of ``runs`` in ``out``; a profile with a calibration regime
    also draws from ``real``, ``analyse_real``'s result (computed here when not given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    palette = {label: f"C{i}" for i, label in enumerate(cfg["methods"])}
    if real is None and calibration_regimes(cfg):
        real = analyse_real(cfg, runs)
    for regime, spec in cfg["regimes"].items():
        regime_runs = [r for r in runs if r["regime"] == regime]
        if not regime_runs:
            continue
        if spec.get("calibration"):  # full data only: its plots are the calibration's and Fig. 3
            fulls = sorted(
                (r for r in regime_runs if r["label"] == "full" and r.get("calibration")), key=lambda r: r["seed"]
            )
            if fulls:
                length_plot(fulls, spec, out, regime, plt, np)
            figure3(cfg, out, regime, fulls, [], banded(None, plt, np), plt, np)
            continue
        fig, axes = plt.subplots(2, len(spec["ratios"]), figsize=(7.5 * len(spec["ratios"]), 9.5), squeeze=False)
        for column, ratio in enumerate(spec["ratios"]):
            for label in spec["methods"]:
                cells = method_cells(cfg, regime_runs, label, ratio)
                if not cells:
                    continue
                # x at each evaluation (the curve's epoch counts completed epochs): samples
                # back-propagated, and forward passes (training + the scoring pass a method needs).
                trained_x = (
                    np.array(
                        [[sum(e["kept"] for e in c["epochs"][: p["epoch"]]) for p in c["curve"]] for c in cells],
                        dtype=float,
                    ).mean(0)
                    / 1000
                )
                scored_x = (
                    np.array(
                        [
                            [
                                0
                                if label in cfg["scoring_free"]
                                else sum(e["candidates"] for e in c["epochs"][: p["epoch"]])
                                for p in c["curve"]
                            ]
                            for c in cells
                        ],
                        dtype=float,
                    ).mean(0)
                    / 1000
                )
                ys = np.array([[p["rsum"] for p in c["curve"]] for c in cells], dtype=float)
                m = ys.mean(0)
                for row, xs in ((0, trained_x), (1, trained_x + scored_x)):
                    ax = axes[row][column]
                    ax.plot(
                        xs,
                        m,
                        color=palette[label],
                        label=label,
                        lw=1.4,
                        ls="--" if label.startswith("dissect") else "-",
                    )
                    if len(cells) > 1:
                        sd = ys.std(0, ddof=1)
                        ax.fill_between(xs, m - sd, m + sd, color=palette[label], alpha=0.12)
            for row, xlabel in (
                (0, "samples back-propagated (thousands)"),
                (1, "forward passes: training + scoring (thousands)"),
            ):
                axes[row][column].set(
                    title=f"{regime}, r = {ratio}: test R@sum (mean ± sd over seeds)",
                    xlabel=xlabel,
                    ylabel="R@sum (%, sum of four recalls)",
                )
                axes[row][column].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"rsum_vs_cost_{regime}.png"), dpi=90)
        plt.close(fig)
        spread_plot(cfg, spec, regime_runs, out, regime, palette, plt, np)
        fulls = [r for r in regime_runs if r["label"] == "full" and r.get("calibration")]
        if fulls and spec.get("main") and not calibration_regimes(cfg):  # a preset's targets (web)
            calibration_plot(fulls, out, regime, plt, np)
        if calibration_regimes(cfg):  # real pairs: Fig. 3 of every regime's full-data runs
            figure3(cfg, out, regime, sorted(fulls, key=lambda r: r["seed"]), [], banded(None, plt, np), plt, np)
            replays = real["replay"].get(regime, {})
            ranking_plot(cfg, spec, regime_runs, fulls, replays, out, regime, palette, plt, np)
            scores_plot(spec, real["scores"].get(regime, {}), out, regime, palette, plt, np)


def scores_plot(spec, curves, out, regime, palette, plt, np):
    """Per epoch and method (the seeds whose runs kept the curve; ``curves``, one regime's
    ``score_curves``): the clean and noisy pairs' mean CLIPScore and the absolute-score AUROC:
    how far each run got towards memorising the noisy pairs (full data: its calibration table)."""
    if not curves:
        return
    fig, axes = plt.subplots(2, len(spec["ratios"]), figsize=(7.5 * len(spec["ratios"]), 9.5), squeeze=False)
    for column, ratio in enumerate(spec["ratios"]):
        for label in spec["methods"]:
            curve = curve_of(curves, ratio, label)
            if not curve:
                continue
            n = len(curve["seeds"])
            xs = np.arange(1, len(curve["clean"]) + 1)
            ls = "--" if label.startswith("dissect") else "-"
            name = f"{label} ({n} seed{'s' if n > 1 else ''})"
            axes[0][column].plot(xs, curve["clean"], color=palette[label], lw=1.4, ls=ls, label=f"{name}, clean")
            axes[0][column].plot(xs, curve["noisy"], color=palette[label], lw=0.9, ls=":", label=f"{label}, noisy")
            axes[1][column].plot(xs, curve["auroc"], color=palette[label], lw=1.4, ls=ls, label=name)
        axes[0][column].set(
            title=f"{regime}, r = {ratio}: mean CLIPScore of the clean and the noisy pairs",
            xlabel="epoch",
            ylabel="mean CLIPScore (100 x cosine)",
        )
        axes[1][column].axhline(0.5, color="grey", lw=0.8)
        axes[1][column].set(
            title=f"{regime}, r = {ratio}: absolute-score AUROC (clean above noisy)",
            xlabel="epoch",
            ylabel="AUROC of the CLIPScore",
        )
        for ax in axes[:, column]:
            ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"scores_{regime}.png"), dpi=90)
    plt.close(fig)


def ranking_plot(cfg, spec, regime_runs, fulls, replays, out, regime, palette, plt, np):
    """Per epoch and method, how well the score a method keeps by put the clean pairs above the
    noisy ones (the audit's AUROC; delta for DISSect, 0.5 during its warm-up), against full
    data's absolute CLIPScore and DISSect's deltas replayed on the scores of the runs in
    ``replays`` (one regime's ``delta_replays``): whether a method's signal separates the pairs
    at all."""
    fig, axes = plt.subplots(1, len(spec["ratios"]), figsize=(10.5 * len(spec["ratios"]), 5.5), squeeze=False)
    for column, ratio in enumerate(spec["ratios"]):
        ax = axes[0][column]
        if fulls:
            table = calibration_table(fulls)  # per epoch, mean over the seeds
            ax.plot(
                [row["epoch"] for row in table],
                [math.nan if row["auroc"] is None else row["auroc"] for row in table],
                color="black",
                lw=1.2,
                ls=":",
                label="full data: absolute CLIPScore",
            )
        for i, (label, cell) in enumerate(replays_at(replays, ratio).items()):
            ls = REPLAY_STYLES[i % len(REPLAY_STYLES)]  # more replayed runs than styles repeat, never drop
            for kind, name in (("warmup", "warm-up delta"), ("mome", "moving-average delta")):
                ys = np.array([math.nan if v is None else v for v in cell[f"{kind}_auroc"]], dtype=float)
                ax.plot(
                    np.arange(1, len(ys) + 1),
                    ys,
                    color=palette["dissect-warmup-fixed" if kind == "warmup" else "dissect-mome"],
                    lw=1.0,
                    ls=ls,
                    label=f"{name} replayed on {label}'s scores ({len(cell['seeds'])} seed"
                    f"{'s' if len(cell['seeds']) > 1 else ''})",
                )
        for label in spec["methods"]:
            cells = method_cells(cfg, regime_runs, label, ratio) if label != "full" else []
            ys = np.array(epoch_means(cells, "audit_auroc"), dtype=float) if cells else np.array([])
            if ys.size and not np.isnan(ys).all():
                style = dict(color=palette[label], lw=1.4, ls="--" if label.startswith("dissect") else "-")
                ax.plot(
                    np.arange(1, len(ys) + 1),
                    ys,
                    label=f"{label} ({len(cells)} seed{'s' if len(cells) > 1 else ''})",
                    **style,
                )
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set(
            title=f"{regime}, r = {ratio}: AUROC of the score each method keeps by (mean over seeds)",
            xlabel="epoch",
            ylabel="P(a clean pair ranks above a noisy one)",
        )
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: the lines cross the middle
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"ranking_auroc_{regime}.png"), dpi=90, bbox_inches="tight")
    plt.close(fig)


def banded(palette, plt, np):
    """``band(ax, xs, ys, label, style)``: the mean over seeds of ``ys`` with a ±sd band, in the
    method's colour where ``palette`` has one."""

    def band(ax, xs, ys, label, style="-"):
        ys = np.array(ys, dtype=float)
        m = np.nanmean(ys, axis=0)
        (line,) = ax.plot(
            xs, m, style, label=label, lw=1.3, **({"color": palette[label]} if palette and label in palette else {})
        )
        if len(ys) > 1:
            sd = np.nanstd(ys, axis=0, ddof=1)
            ax.fill_between(xs, m - sd, m + sd, color=line.get_color(), alpha=0.15)

    return band


def length_plot(fulls, spec, out, regime, plt, np):
    """The calibration of the main regime's length (``calibration_<regime>.png``), per epoch from 1
    and mean over the seeds (band: min-max): the clean, noisy and junk clean pairs' mean
    CLIPScore; the gap with its peak, half the peak and E; the AUROCs; test R@sum."""
    fulls = sorted(fulls, key=lambda r: r["seed"])
    rule = main_length(fulls, most=spec["epochs"])
    table = calibration_table(fulls)
    epochs = [t["epoch"] for t in table]
    per_seed = {
        key: np.array(
            [
                [np.nan if t.get(key) is None else t[key] for t in r["calibration"]["table"][: len(epochs)]]
                for r in fulls
            ],
            dtype=float,
        )
        for key in ("clean", "noisy", "clean_junk", "gap", "auroc", "junk_auroc")
    }
    per_seed["rsum"] = np.array(
        [[{p["epoch"]: p["rsum"] for p in r["curve"]}.get(e, np.nan) for e in epochs] for r in fulls], dtype=float
    )
    fig, axes = plt.subplots(1, 4, figsize=(22, 4.6))

    def draw(ax, key, label, **style):
        ys = per_seed[key]
        if np.isnan(ys).all():
            return
        with np.errstate(invalid="ignore"):
            (line,) = ax.plot(epochs, np.nanmean(ys, 0), label=label, **style)
            if len(fulls) > 1:
                ax.fill_between(epochs, np.nanmin(ys, 0), np.nanmax(ys, 0), color=line.get_color(), alpha=0.12)

    draw(axes[0], "clean", "clean", color="tab:blue")
    draw(axes[0], "noisy", "noisy (shuffled)", color="tab:red")
    draw(axes[0], "clean_junk", "clean, junk caption", color="tab:orange", ls="--")
    axes[0].set(title=f"{regime}: mean CLIPScore", xlabel="epoch", ylabel="CLIPScore (100 x cosine)")
    draw(axes[1], "gap", "clean - noisy", color="k")
    axes[1].axhline(rule["peak"] / 2, color="grey", lw=0.8, ls=":", label="half the peak")
    axes[1].axvline(rule["length"], color="tab:green", lw=1.0, ls="--", label=f"E = {rule['length']}")
    axes[1].plot([rule["peak_epoch"]], [rule["peak"]], "o", color="k", ms=4)
    axes[1].set(title="gap of the means (the length rule)", xlabel="epoch", ylabel="CLIPScore")
    draw(axes[2], "auroc", "clean above noisy", color="k")
    draw(axes[2], "junk_auroc", "other clean above junk clean", color="tab:orange", ls="--")
    axes[2].axhline(0.5, color="grey", lw=0.8)
    axes[2].set(title="AUROC of the absolute CLIPScore", xlabel="epoch", ylabel="AUROC")
    draw(axes[3], "rsum", "test R@sum", color="tab:purple")
    axes[3].set(title="test R@sum at the epoch's end", xlabel="epoch", ylabel="R@sum")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"{regime}: full data, mean over seeds {', '.join(str(r['seed']) for r in fulls)} (band: min-max)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"calibration_{regime}.png"), dpi=90)
    plt.close(fig)


def spread_plot(cfg, spec, regime_runs, out, regime, palette, plt, np):
    """Per epoch and method: the spread of the CLIPScores, the scoring pass's mean loss, and how
    much cleaner the kept set is than the candidates it was picked from."""
    fig, axes = plt.subplots(3, len(spec["ratios"]), figsize=(7.5 * len(spec["ratios"]), 12), squeeze=False)
    chance = math.log(spec["batch"])
    for column, ratio in enumerate(spec["ratios"]):
        for label in spec["methods"]:
            cells = method_cells(cfg, regime_runs, label, ratio)
            if not cells:
                continue
            style = dict(color=palette[label], label=label, lw=1.4, ls="--" if label.startswith("dissect") else "-")
            curves = (epoch_means(cells, "clipscore_std"), epoch_means(cells, "mean_loss"), precision_gain(cells))
            for row, curve in enumerate(curves):
                ys = np.array(curve, dtype=float)
                if not np.isnan(ys).all():
                    axes[row][column].plot(np.arange(1, len(ys) + 1), ys, **style)
        axes[0][column].set(
            title=f"{regime}, r = {ratio}: spread of the CLIPScores (mean over seeds)",
            xlabel="epoch",
            ylabel="sd of the CLIPScore over the epoch's candidates",
        )
        axes[1][column].axhline(chance, color="grey", lw=0.8, ls=":", label=f"chance, ln {spec['batch']}")
        axes[1][column].set(
            title=f"{regime}, r = {ratio}: mean per-sample loss of the scoring pass",
            xlabel="epoch",
            ylabel="symmetric InfoNCE (methods that score by loss)",
        )
        axes[2][column].axhline(0, color="grey", lw=0.8)
        axes[2][column].set(
            title=f"{regime}, r = {ratio}: kept-set precision gain over the candidates",
            xlabel="epoch",
            ylabel="clean share kept - clean share of the candidates",
        )
        for ax in axes[:, column]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"score_spread_{regime}.png"), dpi=90)
    plt.close(fig)


def calibration_plot(fulls, out, regime, plt, np):
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8))
    epochs = [t["epoch"] for t in fulls[0]["calibration"]["table"]]
    for key, label, color in (
        ("auroc", "all clean vs noisy", "k"),
        ("rare_auroc", "rare clean vs noisy", "tab:purple"),
    ):
        ys = np.array([[t[key] for t in r["calibration"]["table"]] for r in fulls])
        axes[0].plot(epochs, ys.mean(0), color=color, label=label)
        if len(fulls) > 1:
            axes[0].fill_between(epochs, ys.min(0), ys.max(0), color=color, alpha=0.12)
    axes[0].axhspan(0.70, 0.85, color="tab:green", alpha=0.08, label="target at the gap peak")
    axes[0].axhline(0.65, color="tab:purple", lw=0.8, ls=":", label="rare target (first quarter)")
    axes[0].axhline(0.5, color="grey", lw=0.8)
    axes[0].set(
        title=f"{regime}, full data: AUROC of the absolute CLIPScore (band: min-max over seeds)",
        xlabel="epoch (0-based)",
        ylabel="AUROC (clean above noisy)",
    )
    axes[0].legend(fontsize=7)
    for key, label in (
        ("clean_full", "clean, full caption"),
        ("clean_partial", "clean, partial caption"),
        ("clean_alt", "clean, alt-text caption"),
        ("clean_hard", "clean, hard image"),
        ("rare_clean", "clean, rare concept"),
        ("noisy_shuffle", "noisy, shuffled"),
        ("noisy_partial", "noisy, wrong attribute"),
    ):
        ys = np.array([[t[key] for t in r["calibration"]["table"]] for r in fulls], dtype=float)
        if np.isnan(ys).all():  # a group the data does not have (e.g. no wrong-attribute noise)
            continue
        with np.errstate(invalid="ignore"):
            axes[1].plot(epochs, np.nanmean(ys, 0), label=label, ls="--" if key.startswith("noisy") else "-")
    axes[1].set(
        title="mean CLIPScore per group (mean over seeds)", xlabel="epoch (0-based)", ylabel="CLIPScore (100 x cosine)"
    )
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "calibration.png"), dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- the paper profile (frozen)


def paper_plots(cfg, root, runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by = {(r["regime"], r["label"], r["seed"]): r for r in runs}

    palette = {label: f"C{i}" for i, label in enumerate(cfg["methods"])}  # one colour per method everywhere
    band = banded(palette, plt, np)

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
