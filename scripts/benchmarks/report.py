"""The report writer: ``results.md`` and ``summary.json`` of a comparison profile
(``write_report``; a profile with a calibration regime, ``real``, also gets the final number's
window, the calibration with its length rule, the premise table and the CPU kernels), its preset's
``calibration.md`` (``calibration_markdown``, ``web``), and the ``paper`` profile's ``results.md``
(``write_paper_report``). The plots are ``plots``.
"""

import json
import math
import os
import statistics
import time

from .analysis import calibration_regimes, curve_of, final_window, replays_at
from .profiles.real import LEAST_EPOCHS
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


def write_report(cfg, out, report, runs, name="web", design=None, real=None):
    """``results.md`` and ``summary.json`` of profile ``name`` (its design: the docstring of
    ``design``); ``real``: ``analysis.analyse_real``'s parts (the final window, calibration,
    premise and CPU kernels) for a profile with a calibration regime."""
    design = design or f"scripts/benchmarks/profiles/{name}.py"
    window = final_window(cfg)
    final_words = (
        "R@sum after the last epoch"
        if window == 1
        else f"the run's final number, the mean test R@sum of its last {window} evaluations"
    )
    lines = [
        f"# Benchmark, profile `{name}`",
        "",
        f"Command: `make bench PROFILE={name}` (`python scripts/paper_bench.py --profile {name}`); report of "
        f"{time.strftime('%Y-%m-%d')} over {len(runs)} cached runs. Design (fixed before the results): the "
        f"docstring of `{design}`. R@sum = IR@1 + IR@10 + TR@1 + TR@10 on the clean test split.",
        "",
        f"Columns: `final` = {final_words}, mean ± sd over seeds; `vs random`, `vs best baseline`, "
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
        "how many runs measured it (one thread each)."
        + (
            " `junk kept` / `other clean kept` = the same share for the clean-labelled pairs whose caption is "
            "junk (a collection, a creator, an address or nothing; no noise label marks them) and for the "
            "other clean pairs."
            if any("junk_share" in r for part in report.values() for t in part["tables"].values() for r in t["rows"])
            else ""
        ),
        "",
    ]
    rare_rsum, rare_kept, small = rare_columns(cfg)
    lines += small
    if real:
        lines += real_sections(cfg, real, window)
    target = cfg.get("precision_target", None if calibration_regimes(cfg) else 0.03)
    for regime, part in report.items():
        spec = cfg["regimes"][regime]
        f = part["full"]
        lines += [f"## {regime}", "", data_line(spec), ""]
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
                f" Seed-to-seed sd / mean of the final R@sum: {100 * f['sd_over_mean']:.1f}%"
                + (
                    f" (target at most {100 * target:.0f}%: {'met' if f['sd_over_mean'] <= target else 'not met'})."
                    if target is not None
                    else "."
                )
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
        if spec.get("calibration"):  # full data only: its measures are the calibration section's
            lines += ["Full data only: the calibration runs (see the calibration section above).", ""]
            continue
        for ratio, table in part["tables"].items():
            junk = any("junk_share" in r for r in table["rows"])
            heads = (
                ["method", "seeds", "final", "vs random", "vs best baseline", "vs full"]
                + (["R@sum rare"] if rare_rsum else [])
                + (["rare kept"] if rare_kept else [])
                + ["clean kept"]
                + (["junk kept", "other clean kept"] if junk else [])
                + ["trained (k)", "scored (k)", "CPU s a run", "switch"]
            )
            lines += [
                f"### r = {ratio}"
                + (f" (best non-DISSect method: `{table['best_baseline']}`)" if table["best_baseline"] else ""),
                "",
                "| " + " | ".join(heads) + " |",
                "| " + " | ".join(["---"] * len(heads)) + " |",
            ]
            for r in table["rows"]:

                def ci(c, word):
                    return "-" if c[0] is None or c[1] is None else f"{fmt(c[0], c[1])} ({word})"

                lines.append(
                    f"| {r['label']} | {r['n']} | {fmt(*r['final'])} | {ci(r['vs_random'], r['verdict_random'])} | "
                    f"{ci(r['vs_best'], r['verdict_best'])} | "
                    f"{ci(r['vs_full'], verdict(r['vs_full'], f['final'][0], cfg['equivalence']))} | "
                    + (f"{fmt(*r['rare'])} | " if rare_rsum else "")
                    + (f"{share_cell(r['rare_share'], r['n'])} | " if rare_kept else "")
                    + f"{share_cell(r['clean_share'], r['n'])} | "
                    + (
                        f"{share_cell(r.get('junk_share', (None, None, 0)), r['n'])} | "
                        f"{share_cell(r.get('junk_clean_share', (None, None, 0)), r['n'])} | "
                        if junk
                        else ""
                    )
                    + f"{r['trained'] / 1000:.1f} | {r['scored'] / 1000:.1f} | {cpu_cell(r['cpu'])} | "
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
    if real:
        lines += standing_section(cfg, report, real)
        lines += kernels_section(cfg, real["cpu_kernels"], len(runs))
        summary = {k: v for k, v in real.items()}
        summary["regimes"] = report
        return save_report(out, lines, summary)
    return save_report(out, lines, report)


# The least group that a column measures: R@1 on fewer test images moves in steps of 5 points or
# more, and a share of fewer training pairs is a handful of pairs' fate, not a group's.
LEAST_RARE_TEST, LEAST_RARE_TRAIN = 20, 50


def rare_columns(cfg):
    """Whether the methods table shows ``R@sum rare`` and ``rare kept``, and the sentence that says
    why not: a design whose data draw has too few rare pairs states their counts as ``group_sizes``
    (from the draw's manifest.json)."""
    sizes = cfg.get("group_sizes", {}).get("rare")
    if not sizes:
        return True, True, []
    rsum, kept = sizes["test"] >= LEAST_RARE_TEST, sizes["train"] >= LEAST_RARE_TRAIN
    if rsum and kept:
        return True, True, []
    left = [name for name, shown in (("`R@sum rare`", rsum), ("`rare kept`", kept)) if not shown]
    return (
        rsum,
        kept,
        [
            f"The rare group (the rarest tenth of the concepts) holds {sizes['train']} training pairs and "
            f"{sizes['test']} test images in this data draw, so {' and '.join(left)} "
            f"{'are' if len(left) > 1 else 'is'} left out of the tables (a column needs at least "
            f"{LEAST_RARE_TEST} test images or {LEAST_RARE_TRAIN} training pairs of its group); summary.json "
            "keeps them.",
            "",
        ],
    )


def data_line(spec):
    """A regime's data, batch, length and seeds in words."""
    data = spec["data"]
    if spec.get("builder") == "openclipart":
        what = (
            f"Open Clip Art pairs (`make-data --source openclipart`: the authors' titles, descriptions and tags, "
            f"{data['noise_rate']:.0%} of the training captions shuffled, images at {data['image_size']} px; "
            f"one draw, data seed {spec.get('data_seed', 'per run seed')})"
        )
    else:
        what = f"{data['train']} pairs" + (
            f" (preset `{data['preset']}`)"
            if data.get("preset")
            else f" ({data['noise_kind']} noise, {data['noise_rate']:.0%})"
        )
    return what + f", batch {spec['batch']}, {spec['epochs']} epochs, seeds {list(spec['seeds'])}."


def num(value, digits=1, sign=False):
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def real_sections(cfg, real, window):
    """The final number, the calibration with its length rule, and the premise table."""
    lines = [
        "## The final number",
        "",
        (
            f"A run's final R@sum is the mean test R@sum of its last {window} evaluations (fixed in the design "
            "before any selection run): every `final`, interval, verdict and decline below reads it."
            if window > 1
            else "A run's final R@sum is its last evaluation's."
        ),
        "",
    ]
    for regime, part in real["calibration"].items():
        lines += calibration_section(cfg, regime, part)
    lines += premise_section(cfg, real["premise"])
    return lines


def calibration_section(cfg, regime, part):
    spec = cfg["regimes"][regime]
    lines = [
        f"## Calibration: `{regime}`",
        "",
        f"Full data (`observe`), {spec['epochs']} epochs evaluated every epoch, seeds {list(spec['seeds'])}. "
        "Epochs count from 1: epoch n's CLIPScores were recorded while it trained (the scoring pass before "
        "each step), its R@sum evaluated at its end. The main regime's length, by the rule fixed before the "
        f"calibration ran: E = the first epoch at which the clean-noisy gap (mean over the seeds) has fallen to "
        f"half of its peak or below, at least {LEAST_EPOCHS}, and {spec['epochs']} if it never does.",
        "",
    ]
    if part is None:
        return lines + ["Not run yet.", ""]
    rule = part["rule"]
    seeds = ", ".join(map(str, part["seeds"]))
    lines.append(
        f"{'Seeds' if len(part['seeds']) > 1 else 'Seed'} {seeds} ({rule['epochs']} epochs): the gap peaks at epoch {rule['peak_epoch']} "
        f"({rule['peak']:.2f}); "
        + (
            f"it has halved (to {rule['gap'][rule['halved_epoch'] - 1]:.2f}, at most {rule['peak'] / 2:.2f}) at "
            f"epoch {rule['halved_epoch']}"
            + (f", before epoch {rule['least']}, the least" if rule["halved_epoch"] < rule["least"] else "")
            if rule["halved_epoch"] is not None
            else (
                f"it never halves within the {rule['epochs']} epochs"
                if rule["peak"] > 0
                else "it never rises above zero, so there is no peak to halve"
            )
        )
        + f". **E = {rule['length']}**"
        + (
            "."
            if part["complete"]
            else f" (provisional: the design's seeds {list(spec['seeds'])} and {spec['epochs']} epochs are not all "
            "run yet)."
        )
        + "".join(
            f" The design gives `{other}` {o['epochs']} epochs"
            + (": the rule's E." if o["epochs"] == rule["length"] else f", not the rule's E ({rule['length']}).")
            for other, o in cfg["regimes"].items()
            if not o.get("calibration")
        )
    )
    lines += [
        "",
        "Per epoch, mean over the seeds: `clean`, `noisy` = mean CLIPScore of the clean and the noisy (shuffled) "
        "training pairs; `gap` = clean - noisy; `AUROC` = the absolute CLIPScore's, clean above noisy; `R@sum` = "
        "test R@sum at the epoch's end; `junk clean` = mean CLIPScore of the clean-labelled pairs whose caption "
        "is junk; `junk AUROC` = P(another clean pair scores above a junk one). Plot: "
        f"`calibration_{regime}.png`.",
        "",
        "| epoch | clean | noisy | gap | AUROC | R@sum | junk clean | junk AUROC |",
        "| " + " | ".join(["---"] * 8) + " |",
    ]
    for t in part["table"]:
        lines.append(
            f"| {t['epoch']}{' (E)' if t['epoch'] == rule['length'] else ''} | {num(t['clean'])} | "
            f"{num(t['noisy'])} | {num(t['gap'], 2)} | {num(t['auroc'], 3)} | {num(t['rsum'])} | "
            f"{num(t['clean_junk'])} | {num(t['junk_auroc'], 3)} |"
        )
    return lines + [""]


def premise_section(cfg, premise):
    lines = [
        "## The premise",
        "",
        "DISSect's premise: the clean pairs' mean CLIPScore peaks early (before the last quarter of the epochs) "
        "and then drops while the noisy pairs' rises. Measured on every full-data run's records, one row a seed "
        "(epochs count from 1): `clean peak` = the epoch of the clean pairs' highest mean CLIPScore, of the "
        "run's epochs; `clean drop` = that peak minus the clean mean in the last epoch; `noisy rise` = the noisy "
        "mean in the last epoch minus its value in the clean peak's epoch; `gap peak` = the epoch of the largest "
        "clean-noisy gap, against the end of the authors' warm-up (a quarter of the epochs); `R@sum peak` = the "
        "highest test R@sum (its epoch); `final` = the final number; `decline` = R@sum peak - final; "
        "`gap end / peak` = the gap in the last epoch against its peak; `gap shrinks` = the gap peaks before the "
        "last quarter and is smaller at the end, so that from its peak the noisy pairs' scores rise faster than "
        "the clean ones': the phase in which `delta = hist - curr` ranks the noisy pairs last, whether or not "
        "the clean mean itself drops (dissect-warmup centres both scores on their epoch's mean, as Fig. 3c "
        "does; dissect-mome compares each pair's own rise).",
        "",
    ]
    if not premise:
        return lines + ["No full-data run yet.", ""]
    lines += [
        "| regime | seed | clean peak | clean drop | noisy rise | gap peak / warm-up end | R@sum peak | final | "
        "decline | premise | gap end / peak | gap shrinks |",
        "| " + " | ".join(["---"] * 12) + " |",
    ]
    for regime, part in premise.items():
        for r in part["rows"]:
            lines.append(
                f"| {regime} | {r['seed']} | {r['clean_peak_epoch']} of {r['epochs']} | {num(r['clean_drop'], 2)} | "
                f"{num(r['noisy_rise'], 2, sign=True)} | {r['gap_peak_epoch']} / {r['warmup_end']} | "
                f"{num(r['rsum_peak'])} ({r['rsum_peak_epoch']}) | {num(r['final'])} | {num(r['decline'])} | "
                f"{'yes' if r['premise'] else 'no'} | {num(r['gap_end'])} / {num(r['gap_peak'])} "
                f"({100 * r['gap_end'] / r['gap_peak']:.0f}%) | {'yes' if r['gap_shrinks'] else 'no'} |"
            )
    lines.append("")
    for regime, part in premise.items():
        lines.append(
            f"- `{regime}`, over {len(part['rows'])} seed{'s' if len(part['rows']) > 1 else ''} (mean ± 95% t-interval half-width): R@sum decline "
            f"{ci_text(part['decline'])}, clean drop {ci_text(part['clean_drop'], 2)}, noisy rise "
            f"{ci_text(part['noisy_rise'], 2)}. {premise_sentence(part)} {shrink_sentence(part)}"
        )
    plots = ", ".join(f"`fig3_{regime}.png`" for regime in premise)
    return lines + [
        "",
        f"The paper's Fig. 3 from these runs (distributions early and late, clean and noisy means, the gap): {plots}.",
        "",
    ]


def ci_text(ci, digits=1):
    m, half, n = ci
    if m is None:
        return "-"
    return f"{m:.{digits}f}" + (f" ± {half:.{digits}f}" if half is not None else " (one seed: no interval)")


def shrink_sentence(part):
    """On which seeds the gap shrinks after an early peak (the phase delta ranks noisy pairs last)."""
    rows, held = part["rows"], part["gap_shrink_seeds"]
    if not held:
        return "On no seed does the gap shrink after an early peak."
    where = ", ".join(
        f"seed {r['seed']}: from epoch {r['gap_peak_epoch']} of {r['epochs']}, to {100 * r['gap_end'] / r['gap_peak']:.0f}% "
        f"of its peak"
        for r in rows
        if r["seed"] in held
    )
    count = "every seed" if len(held) == len(rows) else f"{len(held)} of {len(rows)} seeds"
    return f"The gap shrinks after an early peak on {count} ({where}): the phase DISSect's delta needs."


def premise_sentence(part):
    """Whether the premise appears on each seed, in words, with what fails where it does not."""
    rows = part["rows"]
    held = [r["seed"] for r in rows if r["premise"]]

    def why(r):
        reasons = []
        if not r["early"]:
            reasons.append(
                f"the clean mean peaks at epoch {r['clean_peak_epoch']} of {r['epochs']}, in the last quarter"
            )
        if r["clean_drop"] <= 0:
            reasons.append("the clean mean does not drop")
        if r["noisy_rise"] <= 0:
            reasons.append("the noisy mean does not rise")
        return f"seed {r['seed']}: " + ", ".join(reasons)

    def how_much(r):  # no threshold defines the premise: the sizes say whether it matters
        return (
            f"seed {r['seed']}: the clean mean peaks at epoch {r['clean_peak_epoch']} of {r['epochs']} and drops "
            f"{r['clean_drop']:.2f} by the end while the noisy one rises {r['noisy_rise']:.2f}"
        )

    failed = "; ".join(why(r) for r in rows if not r["premise"])
    appears = "; ".join(how_much(r) for r in rows if r["premise"])
    if len(held) == len(rows):
        return f"The premise appears on every seed ({appears})."
    if not held:
        return f"The premise does not appear on any seed ({failed}): that is a result."
    return f"The premise appears on {len(held)} of {len(rows)} seeds ({appears}), not on the others ({failed})."


def standing_section(cfg, report, real):
    """Where DISSect stands, in words, per regime and ratio (a profile on real pairs): the phase
    its delta needs (from the premise table), then every DISSect variant's paired differences
    against random, the best non-DISSect method and full data with their verdicts, and how much
    cleaner its kept sets were than their candidates, against the other methods'."""
    lines = []
    for regime, part in report.items():
        if cfg["regimes"][regime].get("calibration"):
            continue
        premise = real["premise"].get(regime)
        for ratio, table in part["tables"].items():
            rows = [r for r in table["rows"] if r["label"].startswith("dissect")]
            if not rows:
                continue
            measured = real["from_switch"].get(regime, {}).get(str(ratio), {})
            full_mean = part["full"]["final"][0]

            def versus(r, key, words):
                m, h, n = r[key]
                if m is None:
                    return None
                word = verdict(r[key], full_mean, cfg["equivalence"])
                return f"{words} {fmt(m, h)}" + (f" ({word})" if h is not None else " (one seed: no interval)")

            def gain(label, key="gain", sign=True):
                g = measured.get(label, {}).get(key)
                return None if not g or g[0] is None else (f"{g[0]:+.3f}" if sign else f"{g[0]:.3f}")

            said, best_cost = [], ""
            best_row = next((r for r in table["rows"] if r["label"] == table["best_baseline"]), None)
            if best_row and abs(best_row["trained"] - rows[0]["trained"]) > 0.05 * rows[0]["trained"]:
                # a baseline that sets its own count (infobatch) trains on more or fewer samples
                best_cost = (
                    f" (which back-propagated {best_row['trained'] / 1000:.0f}k samples to DISSect's "
                    f"{rows[0]['trained'] / 1000:.0f}k)"
                )
            for r in rows:
                parts = [
                    versus(r, "vs_random", "against `random`"),
                    versus(r, "vs_best", f"against the best non-DISSect method, `{table['best_baseline']}`{best_cost},")
                    if table["best_baseline"] not in (None, "random")
                    else None,
                    versus(r, "vs_full", "against full data"),
                ]
                cleaner, separated = gain(r["label"]), gain(r["label"], "auroc", sign=False)
                switches = ", ".join("never" if s is None else str(s) for s in r["switches"])
                said.append(
                    f"- `{r['label']}` ({r['n']} seed{'s' if r['n'] > 1 else ''}, final {fmt(*r['final'])}): "
                    + "; ".join(p for p in parts if p)
                    + (
                        f"; kept sets' clean share {cleaner} against their candidates' from the switch on"
                        if cleaner
                        else ""
                    )
                    + (f", its ranking's AUROC {separated}" if separated else "")
                    + f" (switch at epoch {switches}, 0-based)."
                )
            others = [
                f"`{label}` {gain(label)}"
                + (f" (AUROC {gain(label, 'auroc', sign=False)})" if label != "random" and gain(label, "auroc") else "")
                for label in (r["label"] for r in table["rows"])
                if not label.startswith("dissect") and gain(label) is not None
            ]
            phase = (
                f"On full data the clean-noisy gap shrank after an early peak on {len(premise['gap_shrink_seeds'])} "
                f"of {len(premise['rows'])} seeds, and the clean mean dropped after an early peak on "
                f"{len(premise['premise_seeds'])} of them (the premise table). "
                if premise
                else ""
            )
            lines += [
                f"## Where DISSect stands: {regime}, r = {ratio}",
                "",
                phase + "Paired differences of the final R@sum, mean ± 95% t-interval half-width, with the verdict "
                "each interval supports; the kept sets' precision gain is the kept clean share minus the "
                "candidates', and the ranking's AUROC how well the score a method keeps by (delta for DISSect) "
                "put the clean pairs above the noisy ones (0.5: chance), each a mean over the epochs from the "
                f"switch on, then over seeds. Plot, per epoch: `ranking_auroc_{regime}.png`.",
                "",
                *said,
                "",
            ]
            lines += replay_sentences(regime, replays_at(real.get("replay", {}).get(regime, {}), ratio), measured)
            same = real.get("identical", {}).get(regime, {}).get(str(ratio), [])
            if same:
                lines += [
                    "Identical runs (the same test R@sum at every evaluation, with `--deterministic`: the methods "
                    "made the same choices, as dissect-warmup-auto does when its detector switches at the fixed "
                    "epoch), so their paired difference on that seed is exactly 0: "
                    + "; ".join(f"seed {seed}: " + ", ".join(f"`{x}`" for x in labels) for seed, labels in same)
                    + ".",
                    "",
                ]
            if others:
                lines += ["The other methods' kept sets, over all epochs: " + ", ".join(others) + ".", ""]
            lines += reached_sentence(regime, ratio, table, real.get("scores", {}).get(regime, {}))
    return lines


def side(auroc):
    """Which way an AUROC of clean above noisy ranks the clean pairs, in words."""
    if auroc < 0.48:
        return "the clean pairs below the noisy ones"
    if auroc > 0.52:
        return "the clean pairs above the noisy ones"
    return "at chance"


def replay_sentences(regime, replays, measured):
    """The deltas replayed on the scores of runs whose choices ignore them (full data,
    ``random``), against DISSect's own runs' ranking AUROC: whether the signal separated the
    pairs before DISSect's choices fed back into the scores."""
    said = []
    for label, cell in replays.items():
        parts = []
        for kind, variants, where in (
            (
                "warmup",
                ("dissect-warmup-fixed", "dissect-warmup-auto"),
                "the warm-up's history, from the authors' switch on",
            ),
            ("mome", ("dissect-mome",), "the moving average's, every epoch"),
        ):
            m, sd, n = cell[f"{kind}_mean"]
            if m is None:
                continue
            own = [
                f"`{v}` {measured[v]['auroc'][0]:.3f}"
                for v in variants
                if measured.get(v, {}).get("auroc") and measured[v]["auroc"][0] is not None
            ]
            parts.append(
                f"{m:.3f}{f' ± {sd:.3f} sd' if sd is not None else ''} for {where} (ranks {side(m)}; "
                f"{cell[f'{kind}_last']:.3f} in the last epoch)"
                + (f", against {' and '.join(own)} in DISSect's own runs" if own else "")
            )
        if parts:
            seeds = ", ".join(str(x) for x in cell["seeds"])
            said.append(
                f"Before any feedback of DISSect's choices: its deltas replayed on the recorded scores of `{label}` "
                f"(seed{'s' if len(cell['seeds']) > 1 else ''} {seeds}; its choices ignore the scores) put the clean "
                "pairs above the noisy ones with AUROC " + "; ".join(parts) + f". Plot: `ranking_auroc_{regime}.png` "
                "(the thin lines)."
            )
    return [line for sentence in said for line in (sentence, "")]


def reached_sentence(regime, ratio, table, scores):
    """How far each method's runs got towards memorising the noisy pairs: the clean and noisy
    pairs' mean CLIPScore, the absolute-score AUROC and the gap against its peak in the last
    epoch (the seeds that kept the curve), in the table's order."""
    said = []
    for r in table["rows"]:
        curve = curve_of(scores, ratio, r["label"])
        if curve and curve["clean"]:
            n = len(curve["seeds"])
            gaps = [c - x for c, x in zip(curve["clean"], curve["noisy"])]
            top = max(range(len(gaps)), key=gaps.__getitem__)
            said.append(
                f"`{r['label']}` {curve['clean'][-1]:.1f} / {curve['noisy'][-1]:.1f}, AUROC {curve['auroc'][-1]:.3f}, "
                f"gap {gaps[-1] / gaps[top]:.0%} of its peak (epoch {top + 1}) ({n} seed{'s' if n > 1 else ''})"
            )
    if not said:
        return []
    return [
        "How far the runs got towards memorising the noisy pairs, in the last epoch: the clean / noisy pairs' "
        "mean CLIPScore, the AUROC of that absolute score (not of the score a method keeps by) and the clean-noisy "
        "gap against its peak (epochs from 1; it shrinks as the noisy pairs are memorised), mean over the seeds "
        "whose runs kept the curve: " + "; ".join(said) + f". Plot, per epoch: `scores_{regime}.png`.",
        "",
    ]


def kernels_section(cfg, found, runs):
    """Which CPU kernels the runs computed with; the runs that differ from those expected, by name."""
    expected = found["expected"]
    why = " (the profile runs with `--deterministic`, which pins them)" if cfg.get("deterministic") else ""
    same = found["counts"].get(str(expected), 0)
    lines = ["## CPU kernels", ""]
    if not found["differ"]:
        every = f"All {runs} runs" if runs > 1 else "The one run"
        return lines + [f"{every} computed with the {expected} kernels{why}.", ""]
    return lines + [
        f"{same} of {runs} runs computed with the {expected} kernels expected{why}; these differ (their last "
        f"digits may): {', '.join(found['differ'])}.",
        "",
    ]


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
    table of the first seed, from the full-data runs of the main regime (a preset's targets; None
    for a profile with a calibration regime, whose report holds its own calibration)."""
    if calibration_regimes(cfg):
        return None
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
    lines = ["# Benchmark, profile `paper`", ""]
    for note in cfg.get("notes", ()):
        lines += [f"> {line}" for line in note] + [""]
    lines += [
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
