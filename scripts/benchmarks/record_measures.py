"""Measures the benchmark reads off a run's ``--selection-record`` files, joined with the
generator's per-sample records (noise label, caption style, image hardness, rare concept).

- ``calibration``: the two conditions a data preset is tuned against (definitions in
  docs/web-preset.md): the absolute-score AUROC (clean above noisy) at the
  epoch where the clean-noisy gap peaks, and the AUROC of the rare clean pairs against the noisy
  ones over the first quarter of the epochs;
- ``group_table``: per epoch, the mean CLIPScore of each difficulty group and both AUROCs;
- ``lock_in``: P(kept at a visit | kept at the previous visit) and P(kept | dropped), for clean
  and noisy pairs, against the unconditional kept rate;
- ``rare_kept_share``: the share of the rare clean pairs' visits that were kept;
- ``junk_kept_share``: the same for the clean-labelled pairs whose caption is junk (real pairs);
- ``score_curve``: per epoch of a selection run, the clean and noisy mean CLIPScore and the
  absolute-score AUROC;
- ``delta_replay``: per epoch of a run whose choices ignore the scores (full data, ``random``),
  how well DISSect's two deltas, computed on that run's own recorded scores, would have put the
  clean pairs above the noisy ones (the signal before any feedback of its own choices);
- ``summarise_records``: what a comparison profile's cached run keeps of its records;
- ``record_groups``: the ``paper`` profile's per-epoch clean and noisy CLIPScores (its Fig. 3).

Epochs are 0-based, as the records store them.
"""

import math
import os

import numpy as np
import pandas as pd

REPLAYED = ("full", "random")  # the methods whose choices ignore the scores: delta replayed on their records


def auroc(positive, negative):
    """P(a random positive scores above a random negative), ties counting half; NaN if a side is empty."""
    positive, negative = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positive, negative]))
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def sample_table(data_dir):
    """One row per training sample (indexed by its key): noisy, style, hard, rare, junk."""
    from open_clip_dissect.synthetic import read_sample_records

    rows = [
        {
            "key": r["key"],
            "noisy": bool(r["noisy"]),
            "noise_kind": r.get("noise_kind"),
            "style": r.get("caption_style", "full"),
            "hard": bool(r.get("hard")),
            "rare": "rare" in r.get("groups", []),
            "junk": bool(r.get("junk")),  # real pairs: a caption no noise label marks (openclipart)
        }
        for r in read_sample_records(os.path.join(data_dir, "train"))
    ]
    return pd.DataFrame(rows).set_index("key")


def load_records(record_dir, samples):
    """Every epoch's records joined with ``samples`` (the generator's key is the record key's
    last path component)."""
    from open_clip_dissect.openclip.training.selection_record import read_epoch, recorded_epochs

    frames = []
    for epoch, files in recorded_epochs(record_dir):
        frame = read_epoch(files, ["key", "curr", "delta", "kept"])
        frame["epoch"] = epoch
        frames.append(frame)
    records = pd.concat(frames, ignore_index=True)
    records["sample"] = records["key"].str.rsplit("/", n=1).str[-1]
    return records.join(samples, on="sample")


def group_table(records):
    """Per epoch: mean CLIPScore per group, the gap, and the two AUROCs."""
    rows = []
    for epoch, frame in records.groupby("epoch", sort=True):
        clean, noisy = frame[~frame["noisy"]], frame[frame["noisy"]]
        row = {
            "epoch": int(epoch),
            "gap": float(clean["curr"].mean() - noisy["curr"].mean()),
            "auroc": auroc(clean["curr"], noisy["curr"]),
            "rare_auroc": auroc(clean.loc[clean["rare"], "curr"], noisy["curr"]),
            "clean": float(clean["curr"].mean()),
            "noisy": float(noisy["curr"].mean()),
            "rare_clean": float(clean.loc[clean["rare"], "curr"].mean()),
        }
        for style in ("full", "partial", "alt"):
            row[f"clean_{style}"] = float(clean.loc[clean["style"] == style, "curr"].mean())
        row["clean_hard"] = float(clean.loc[clean["hard"], "curr"].mean())
        if "junk" in clean and clean["junk"].any():  # real pairs: clean by label, junk by caption
            row["clean_junk"] = float(clean.loc[clean["junk"], "curr"].mean())
            row["clean_not_junk"] = float(clean.loc[~clean["junk"], "curr"].mean())
            row["junk_auroc"] = auroc(clean.loc[~clean["junk"], "curr"], clean.loc[clean["junk"], "curr"])
        for kind in ("shuffle", "partial"):
            row[f"noisy_{kind}"] = float(noisy.loc[noisy["noise_kind"] == kind, "curr"].mean())
        rows.append(row)
    return rows


def calibration(records):
    """The preset's two calibration measures (see the module docstring) and the per-epoch table."""
    table = group_table(records)
    peak = max(table, key=lambda r: r["gap"])
    quarter = max(1, math.ceil(len(table) / 4))
    first = [r["rare_auroc"] for r in table[:quarter]]
    return {
        "auroc_at_gap_peak": peak["auroc"],
        "gap_peak_epoch": peak["epoch"],
        "rare_clean_auroc_first_quarter": float(np.nanmean(first)),
        "epochs": len(table),
        "quarter_epochs": quarter,
        "table": table,
    }


def lock_in(records, since_epoch=0):
    """Does a pair's last decision predict the next one? Over consecutive visits of the same pair
    (both at or after ``since_epoch``): P(kept | kept last visit) and P(kept | dropped last visit),
    per clean and noisy pairs, and the unconditional kept rate over those visits."""
    frame = records[records["epoch"] >= since_epoch].sort_values(["sample", "epoch"])
    # One visit a pair and epoch (an epoch may repeat a few samples to fill its last batch).
    frame = frame.drop_duplicates(["sample", "epoch"], keep="first")
    previous = frame.groupby("sample")["kept"].shift(1)
    pairs = frame[previous.notna()].assign(previous=previous[previous.notna()].astype(bool))
    out = {"visits": int(len(pairs)), "kept_rate": float(pairs["kept"].mean()) if len(pairs) else None}
    for name, part in (("clean", pairs[~pairs["noisy"]]), ("noisy", pairs[pairs["noisy"]])):
        after_kept, after_dropped = part[part["previous"]], part[~part["previous"]]
        out[name] = {
            "kept_rate": float(part["kept"].mean()) if len(part) else None,
            "kept_after_kept": float(after_kept["kept"].mean()) if len(after_kept) else None,
            "kept_after_dropped": float(after_dropped["kept"].mean()) if len(after_dropped) else None,
        }
    return out


def rare_kept_share(records, since_epoch=0):
    """Kept visits over all visits of the rare clean pairs, and of all clean pairs, from ``since_epoch`` on."""
    frame = records[(records["epoch"] >= since_epoch) & ~records["noisy"]]
    rare = frame[frame["rare"]]
    return {
        "rare_clean": float(rare["kept"].mean()) if len(rare) else None,
        "clean": float(frame["kept"].mean()) if len(frame) else None,
    }


def junk_kept_share(records, since_epoch=0):
    """Kept visits over all visits of the clean-labelled pairs whose caption is junk, and of the
    other clean pairs, from ``since_epoch`` on (None where the data flags no junk)."""
    frame = records[(records["epoch"] >= since_epoch) & ~records["noisy"]]
    if "junk" not in frame or not frame["junk"].any():
        return None
    return {
        "junk": float(frame.loc[frame["junk"], "kept"].mean()),
        "clean": float(frame.loc[~frame["junk"], "kept"].mean()),
    }


def summarise_records(record, samples, label, selection_rows, warmup_epochs=None):
    """What the report needs from a run's per-sample records (they are deleted afterwards);
    ``samples``: the data builder's per-sample table; ``warmup_epochs``: the authors' warm-up in
    the run's regime, for the delta replay of the runs whose choices ignore the scores."""
    records = load_records(record, samples)
    switch = next(
        (row["selection_from_epoch"] for row in selection_rows if row.get("selection_from_epoch") is not None), None
    )
    since = switch if switch is not None else (1 if label != "full" else 0)
    out = {"switch": switch, "rare_share": rare_kept_share(records, since)}
    junk = junk_kept_share(records, since)
    if junk is not None:
        out["junk_share"] = junk
    if label == "full":
        out["calibration"] = calibration(records)
        if junk is not None:  # real pairs: the score distributions of Fig. 3, per epoch
            out["groups"] = record_groups(record, None)
    else:
        out["lock_in"] = lock_in(records, since)
        out["scores"] = score_curve(records)
    if label in REPLAYED and warmup_epochs is not None:
        out["replay"] = delta_replay(records, warmup_epochs)
    return out


def score_curve(records):
    """Per epoch of a selection run: the clean and noisy pairs' mean CLIPScore and the
    absolute-score AUROC, whether or not the method kept by that score (how far the run got
    towards memorising the noisy pairs, next to full data's calibration table)."""
    rows = []
    for epoch, frame in records.groupby("epoch", sort=True):
        clean, noisy = frame.loc[~frame["noisy"], "curr"], frame.loc[frame["noisy"], "curr"]
        rows.append(
            {
                "epoch": int(epoch),
                "clean": float(clean.mean()),
                "noisy": float(noisy.mean()),
                "auroc": auroc(clean, noisy),
            }
        )
    return rows


def momentum_default():
    """dissect-mome's default beta (read from the strategy, so the replay follows it)."""
    from open_clip_dissect.core.strategies.dissect import DissectMomentum

    return next(o.default for o in DissectMomentum.options if o.name == "momentum")


def delta_replay(records, warmup_epochs, momentum=None):
    """Per epoch, DISSect's ``delta = hist - curr`` replayed on a run's recorded CLIPScores:
    ``warmup``, the history a warm-up of ``warmup_epochs`` leaves (each pair's score at its last
    visit before that epoch; rows from that epoch on), and ``mome``, the moving average of each
    pair's earlier scores (beta ``momentum``, dissect-mome's default; a first visit has delta 0).
    For each: ``*_auroc``, P(a clean pair's delta above a noisy one's) (0.5: chance; below it
    delta ranks the clean pairs last), and ``*_gap``, the clean pairs' mean delta minus the noisy
    pairs'. Meaningful for runs whose choices ignore the scores (full data, ``random``): what
    the signal was before any feedback of DISSect's own choices. A pair not visited in an
    epoch (the last partial batch is dropped) keeps its history."""
    beta = momentum_default() if momentum is None else momentum
    visits = records.drop_duplicates(["sample", "epoch"], keep="first")
    curr = visits.pivot(index="sample", columns="epoch", values="curr").sort_index(axis=1)
    noisy = visits.groupby("sample")["noisy"].first().reindex(curr.index).astype(bool).to_numpy()
    scores = curr.to_numpy(dtype=float)

    def measured(prefix, delta):
        seen = np.isfinite(delta)
        clean, noise = delta[seen & ~noisy], delta[seen & noisy]
        return {
            f"{prefix}_auroc": auroc(clean, noise),
            f"{prefix}_gap": float(clean.mean() - noise.mean()) if len(clean) and len(noise) else float("nan"),
        }

    rows = []
    average = np.full(len(scores), np.nan)  # the moving average; NaN until a pair's first visit
    warm = np.full(len(scores), np.nan)  # the warm-up's history: the last visit before its end
    for column, epoch in enumerate(curr.columns):
        now = scores[:, column]
        seen = np.isfinite(now)
        hist = np.where(np.isfinite(average), average, now)
        row = {"epoch": int(epoch), **measured("mome", hist - now)}
        average = np.where(seen, beta * hist + (1.0 - beta) * now, average)
        if epoch < warmup_epochs:
            warm = np.where(seen, now, warm)
        else:
            row.update(measured("warmup", warm - now))
        rows.append(row)
    return rows


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
