"""The report writer: ``results.md`` and ``summary.json`` of a comparison profile
(``write_report``), its preset's ``calibration.md`` (``calibration_markdown``), and the ``paper``
profile's ``results.md`` (``write_paper_report``). The plots are ``plots``.
"""

import json
import math
import os
import statistics
import time

from .stats import mean_sd, verdict


def fmt(m, sd=None, digits=1):
    if m is None:
        return "-"
    return f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def save_report(folder, lines, summary):
    """``results.md`` from ``lines`` (a line naming the folder's plots appended) and ``summary.json``."""
    lines = lines + ["Plots: " + ", ".join(sorted(p for p in os.listdir(folder) if p.endswith(".png")))]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(folder, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return text


def write_report(cfg, out, report, runs, name="web", design=None):
    """``results.md`` and ``summary.json`` of profile ``name`` (its design: the docstring of ``design``)."""
    design = design or f"scripts/benchmarks/profiles/{name}.py"
    lines = [
        f"# Benchmark, profile `{name}`",
        "",
        f"Command: `make bench PROFILE={name}` (`python scripts/paper_bench.py --profile {name}`); report of "
        f"{time.strftime('%Y-%m-%d')} over {len(runs)} cached runs. Design (fixed before the results): the "
        f"docstring of `{design}`. R@sum = IR@1 + IR@10 + TR@1 + TR@10 on the clean test split.",
        "",
        "Columns: `final` = R@sum after the last epoch, mean ± sd over seeds; `vs random`, `vs best baseline`, "
        "`vs full` = paired difference of the final R@sum on the same seeds, mean ± 95% t-interval half-width, "
        "with the verdict the interval supports (`level`: the interval lies within ±3% of full data's mean "
        "R@sum; `cannot tell`: neither a difference nor equivalence at this precision); `R@sum rare` = the "
        "same on the queries about test images that show one of the rarest tenth of the concepts; `rare "
        "kept` / `clean kept` = share of the rare clean pairs' / all clean pairs' visits that were trained "
        "(from the switch on for DISSect, from epoch 1 for a run that never switched; `(k of n)`: only k "
        "seeds had visits to measure); `trained`, `scored` = samples back-propagated and scoring forward "
        "passes over the run, thousands (full data and random need no scoring pass of their own); `CPU s a "
        "run` = mean CPU seconds of a run (training, scoring passes, evaluations and data workers; these "
        "runs record every score, so full data and random ran the scoring pass too), with "
        "how many runs measured it (one thread each).",
        "",
    ]
    for regime, part in report.items():
        spec = cfg["regimes"][regime]
        f = part["full"]
        lines += [
            f"## {regime}",
            "",
            f"{spec['data']['train']} pairs"
            + (
                f" (preset `{spec['data']['preset']}`)"
                if spec["data"].get("preset")
                else f" ({spec['data']['noise_kind']} noise, {spec['data']['noise_rate']:.0%})"
            )
            + f", batch {spec['batch']}, {spec['epochs']} epochs, seeds {list(spec['seeds'])}.",
            "",
        ]
        if not f["n"]:
            lines += ["Not run yet.", ""]
            continue
        dm, dh, dn = f["decline"]
        shown = dh is not None and dm - dh > 0
        lines.append(
            f"Full data ({f['n']} seeds): final R@sum {fmt(*f['final'])}, peak {fmt(*f['peak'])} at epochs "
            f"{', '.join(map(str, f['peak_epochs']))}; decline peak to final {fmt(dm, dh)} (95% interval): "
            + (
                "the damage selection is meant to avoid is present, so 'beats full data' can be tested here."
                if shown
                else "no decline beyond its interval, so 'beats full data' cannot be tested in this regime."
            )
            + (
                f" Seed-to-seed sd / mean of the final R@sum: {100 * f['sd_over_mean']:.1f}% (target at most 3%: "
                f"{'met' if f['sd_over_mean'] <= 0.03 else 'not met'})."
                if f["sd_over_mean"] is not None
                else ""
            )
        )
        t = part["time"]
        lines += [
            "",
            f"Cost: {t['runs']} runs, {t['wall_hours']:.1f} h of wall-clock summed over runs (pauses and waits for "
            f"a busy core included)"
            + (
                f"; CPU time measured on {t['cpu_runs']} of them: {t['cpu_hours']:.1f} h, so at least "
                f"{t['cpu_hours'] / cfg['parallel']:.1f} h on {cfg['parallel']} cores."
                if t["cpu_runs"]
                else "; no run measured its CPU time."
            ),
            "",
        ]
        for ratio, table in part["tables"].items():
            lines += [
                f"### r = {ratio}"
                + (f" (best non-DISSect method: `{table['best_baseline']}`)" if table["best_baseline"] else ""),
                "",
                "| method | seeds | final | vs random | vs best baseline | vs full | R@sum rare | rare kept | "
                "clean kept | trained (k) | scored (k) | CPU s a run | switch |",
                "| " + " | ".join(["---"] * 13) + " |",
            ]
            for r in table["rows"]:

                def ci(c, word):
                    return "-" if c[0] is None or c[1] is None else f"{fmt(c[0], c[1])} ({word})"

                lines.append(
                    f"| {r['label']} | {r['n']} | {fmt(*r['final'])} | {ci(r['vs_random'], r['verdict_random'])} | "
                    f"{ci(r['vs_best'], r['verdict_best'])} | "
                    f"{ci(r['vs_full'], verdict(r['vs_full'], f['final'][0], cfg['equivalence']))} | "
                    f"{fmt(*r['rare'])} | {share_cell(r['rare_share'], r['n'])} | "
                    f"{share_cell(r['clean_share'], r['n'])} | "
                    f"{r['trained'] / 1000:.1f} | {r['scored'] / 1000:.1f} | {cpu_cell(r['cpu'])} | "
                    f"{', '.join('-' if s is None else str(s) for s in r['switches'])} |"
                )
            lines.append("")
            locked = [r for r in table["rows"] if r["lock_in"]]
            if locked:
                lines += [
                    "Lock-in (from the switch on, from epoch 1 in a run that never switched; mean over seeds, "
                    "with how many where fewer: a run that switched after its last epoch has no visits to "
                    "measure): P(kept | kept at the previous visit) and P(kept | dropped at the previous visit), "
                    "against the pair group's kept rate.",
                    "",
                    "| method | clean: kept rate | after kept | after dropped | noisy: kept rate | after kept | "
                    "after dropped |",
                    "| " + " | ".join(["---"] * 7) + " |",
                ]
                for r in locked:
                    cells = [
                        fmt(*r["lock_in"][g][k], digits=3)
                        for g in ("clean", "noisy")
                        for k in ("kept_rate", "kept_after_kept", "kept_after_dropped")
                    ]
                    seeds = f" ({r['lock_in_seeds']} of {r['n']} seeds)" if r["lock_in_seeds"] < r["n"] else ""
                    lines.append(f"| {r['label']}{seeds} | " + " | ".join(cells) + " |")
                lines.append("")
            lines += spread_table(spec, table["rows"])
    return save_report(out, lines, report)


def share_cell(share, seeds):
    """A kept share, mean ± sd over the seeds that measured it; how many where fewer than all."""
    m, sd, measured = share
    return fmt(m, sd, digits=3) + (f" ({measured} of {seeds})" if m is not None and measured < seeds else "")


def cpu_cell(seconds):
    """Mean CPU seconds of a method's runs, with how many runs measured it."""
    return f"{statistics.mean(seconds):.0f} ({len(seconds)})" if seconds else "-"


def spread_table(spec, rows):
    """The score spread and loss per method at a few epochs: how a method that never learns
    fails (its scores blow apart, or stay collapsed at chance)."""
    epochs = spec["epochs"]
    marks = sorted({1, max(1, epochs // 4), max(1, epochs // 2), epochs})
    chance = math.log(spec["batch"])
    lines = [
        "Score spread, loss and kept-set precision (mean over seeds): the standard deviation of the CLIPScore over each epoch's "
        f"candidates at epochs {', '.join(map(str, marks))}, and the mean per-sample loss of the scoring pass in "
        f"the last epoch, for the methods that score by loss (chance: ln {spec['batch']} = {chance:.2f}); "
        "`precision gain` = the kept set's clean share minus the candidates', in the last epoch. "
        f"Plot: `score_spread_<regime>.png`.",
        "",
        "| method | "
        + " | ".join(f"spread, epoch {e}" for e in marks)
        + " | loss, last epoch | precision gain, last epoch |",
        "| " + " | ".join(["---"] * (len(marks) + 3)) + " |",
    ]
    for r in rows:
        spread = [r["spread"][e - 1] if e <= len(r["spread"]) else None for e in marks]
        loss = r["loss"][-1] if r["loss"] else None
        gain = r["precision_gain"][-1] if r["precision_gain"] else None
        lines.append(
            f"| {r['label']} | "
            + " | ".join("-" if v is None else f"{v:.1f}" for v in spread)
            + f" | {'-' if loss is None else f'{loss:.2f}'} | {'-' if gain is None else f'{gain:+.3f}'} |"
        )
    return lines + [""]


def calibration_markdown(cfg, runs, name="web"):
    """``calibration.md`` (docs/web_bench/calibration.md): both measures per seed and the per-epoch
    table of the first seed, from the full-data runs of the main regime."""
    fulls = sorted(
        (
            r
            for r in runs
            if r["label"] == "full" and r.get("calibration") and cfg["regimes"].get(r["regime"], {}).get("main")
        ),
        key=lambda r: r["seed"],
    )
    if not fulls:
        return None
    main_spec = cfg["regimes"][fulls[0]["regime"]]
    lines = [
        f"# Calibration of the `{name}` preset",
        "",
        f"Full-data (`--selection observe`) runs of the main regime (`{fulls[0]['regime']}`: "
        f"{main_spec['data']['train']:,} pairs of one draw of the data, batch {main_spec['batch']}, "
        f"{main_spec['epochs']} epochs). Conditions, fixed before any selection method ran on the preset: the "
        "absolute-score AUROC (clean above noisy) at the epoch where the clean-noisy gap peaks lies in "
        "[0.70, 0.85]; over the first quarter of the epochs, the AUROC of the clean pairs about the "
        "rarest tenth of the concepts against the noisy pairs is at most 0.65. Command: `python "
        f"scripts/paper_bench.py --profile {name} --calibrate --seed S --json FILE`.",
        "",
        "| seed | gap peak epoch | AUROC at gap peak | rare clean vs noisy, first quarter | both met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in fulls:
        c = r["calibration"]
        met = 0.70 <= c["auroc_at_gap_peak"] <= 0.85 and c["rare_clean_auroc_first_quarter"] <= 0.65
        lines.append(
            f"| {r['seed']} | {c['gap_peak_epoch']} | {c['auroc_at_gap_peak']:.3f} | "
            f"{c['rare_clean_auroc_first_quarter']:.3f} | {'yes' if met else 'no'} |"
        )
    table = fulls[0]["calibration"]["table"]
    lines += [
        "",
        f"Per epoch, seed {fulls[0]['seed']} (0-based epochs; mean CLIPScore per group; `alt`, "
        "`partial`, `full`: clean pairs by caption style; `hard`: clean pairs with a harder image; "
        "`rare`: clean pairs about a rare concept):",
        "",
        "| epoch | AUROC | rare AUROC | gap | clean | noisy | rare | full | partial | alt | hard | "
        "noisy shuffle | noisy partial |",
        "| " + " | ".join(["---"] * 13) + " |",
    ]
    for t in table:
        lines.append(
            "| "
            + " | ".join(
                [str(t["epoch"]), f"{t['auroc']:.3f}", f"{t['rare_auroc']:.3f}"]
                + [
                    f"{t[k]:.1f}"
                    for k in (
                        "gap",
                        "clean",
                        "noisy",
                        "rare_clean",
                        "clean_full",
                        "clean_partial",
                        "clean_alt",
                        "clean_hard",
                        "noisy_shuffle",
                        "noisy_partial",
                    )
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the paper profile (frozen)


def write_paper_report(cfg, root, report, runs, started, design="scripts/benchmarks/profiles/paper.py"):
    lines = [
        "# Benchmark, profile `paper`",
        "",
        f"Command: `make bench PROFILE=paper`; {time.strftime('%Y-%m-%d')}; {len(runs)} runs "
        f"({time.time() - started:.0f} s this invocation). Design (fixed before the results): see "
        f"`{design}`. Seeds {list(cfg['seeds'])}, r = {cfg['ratio']}, 40% noisy pairs, "
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
    return save_report(root, lines, report)
