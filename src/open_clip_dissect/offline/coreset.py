"""Offline scoring and filtering of a pool from its oracle embeddings (``score`` and ``filter``).

Filter rules apply in order, each keeping the top fraction *of the pool size* among the samples
the previous rules kept (the papers' chains: ``negcliploss:0.3`` then ``normsiminf:0.2`` keeps 30%
of the pool by negCLIPLoss, then the best 20% of the pool among those by NormSim-inf)."""

import math
import os
from typing import List, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from open_clip_dissect.atomic import atomic_output
from open_clip_dissect.core import oracle_scores
from open_clip_dissect.core.keyset import KEY_LIST_NAME
from open_clip_dissect.errors import InputError

SCORES = ("clipscore", "negcliploss", "normsim2", "normsiminf", "vas", "vas-d", "forgetting")
NEEDS_TARGET = ("normsim2", "normsiminf", "vas")


def check_score_options(
    names: Sequence[str],
    has_target: bool,
    negcliploss_batch_size: int = 32768,
    negcliploss_repeats: int = 10,
    vas_d_fraction: float = 0.3,
    vas_d_rounds: int = 5,
) -> None:
    """The ``score`` flags, before any embedding is read."""
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise InputError("--scores", f"unknown {unknown}; choose from {list(SCORES)}")
    if not has_target and any(n in NEEDS_TARGET for n in names):
        raise InputError("--target", f"needed for {[n for n in names if n in NEEDS_TARGET]}")
    if "negcliploss" in names:
        oracle_scores.check_negcliploss_options(negcliploss_batch_size, negcliploss_repeats)
    if "vas-d" in names:
        oracle_scores.check_vas_d_options(vas_d_fraction, vas_d_rounds)


def read_scores(path: str) -> pd.DataFrame:
    """The parquet ``score`` wrote (``--scores`` of ``filter``)."""
    if not os.path.isfile(path):
        raise InputError("--scores", f"file not found: {path}")
    try:
        frame = pd.read_parquet(path)
    except Exception as exn:  # noqa: BLE001 - pyarrow raises several types for a file that is not parquet
        raise InputError(
            path, f"cannot read it as parquet (--scores takes the file `score` wrote): {type(exn).__name__}: {exn}"
        ) from None
    if "key" not in frame.columns:
        raise InputError(path, f"has no 'key' column (columns: {list(frame.columns)})")
    return frame


def compute_scores(
    names: Sequence[str],
    image: torch.Tensor,
    text: torch.Tensor,
    tau: float,
    target: torch.Tensor = None,
    clipscore_scale: float = 100.0,
    negcliploss_batch_size: int = 32768,
    negcliploss_repeats: int = 10,
    vas_d_fraction: float = 0.3,
    vas_d_rounds: int = 5,
    seed: int = 0,
) -> dict:
    names = [n for n in names if n != "forgetting"]  # from selection records: see forgetting_scores
    check_score_options(
        names, target is not None, negcliploss_batch_size, negcliploss_repeats, vas_d_fraction, vas_d_rounds
    )
    out = {}
    for name in names:
        if name == "clipscore":
            out[name] = oracle_scores.clipscore(image, text, clipscore_scale)
        elif name == "negcliploss":
            out[name] = oracle_scores.negcliploss(image, text, tau, negcliploss_batch_size, negcliploss_repeats, seed)
        elif name == "normsim2":
            out[name] = oracle_scores.normsim(image, target, p=2)
        elif name == "normsiminf":
            out[name] = oracle_scores.normsim(image, target, p=math.inf)
        elif name == "vas":
            out[name] = oracle_scores.vas(image, target)
        else:
            out[name] = oracle_scores.vas_d(image, vas_d_fraction, vas_d_rounds)
    return {k: v.numpy() for k, v in out.items()}


def forgetting_scores(record_dir: str) -> pd.DataFrame:
    """Forgetting events per key from a run's ``--selection-record`` folder (every rank's files).

    A sample counts as *learned* at a visit when its CLIPScore ``curr`` is at least the median
    ``curr`` of that epoch's scored samples (a relative threshold: CLIPScores drift as a whole);
    a forgetting event is a visit at which it is not learned right after one at which it was.
    Columns: ``key``, ``forgetting`` (the count)."""
    from open_clip_dissect.openclip.training.selection_record import read_epoch, recorded_epochs

    epochs = recorded_epochs(record_dir)
    if not epochs:
        raise InputError("--selection-record", f"no epoch_*.parquet in {record_dir}")
    frame = pd.concat([read_epoch(files, ["key", "epoch", "curr"]) for _, files in epochs], ignore_index=True)
    frame["learned"] = frame["curr"] >= frame.groupby("epoch")["curr"].transform("median")
    frame = frame.sort_values(["key", "epoch"], kind="stable")
    previous = frame.groupby("key")["learned"].shift(1, fill_value=False)
    frame["event"] = previous & ~frame["learned"]
    return frame.groupby("key", as_index=False)["event"].sum().rename(columns={"event": "forgetting"})


def parse_rules(rules: Sequence[str]) -> List[Tuple[str, float]]:
    parsed = []
    for rule in rules:
        name, _, fraction = rule.partition(":")
        try:
            value = float(fraction)
        except ValueError:
            raise InputError("--keep", f"{rule!r} is not SCORE:FRACTION") from None
        if not 0.0 < value <= 1.0:
            raise InputError("--keep", f"fraction in {rule!r} must be in (0, 1]")
        parsed.append((name, value))
    return parsed


def apply_rules(frame: pd.DataFrame, rules: Sequence[Tuple[str, float]]) -> np.ndarray:
    """Row indices kept by the chain (each step: top fraction of the pool size among survivors)."""
    alive = np.arange(len(frame))
    for name, fraction in rules:
        if name not in frame.columns:
            raise InputError("--keep", f"no score column {name!r} (columns: {list(frame.columns)})")
        count = min(len(alive), max(1, round(fraction * len(frame))))
        order = np.argsort(-frame[name].to_numpy()[alive], kind="stable")
        alive = np.sort(alive[order[:count]])
    return alive


def datacomp_uids(uids: Sequence[str]) -> np.ndarray:
    """DataComp keep-list: each 32-hex uid as two uint64 (first/last 16 digits), sorted."""
    pairs = np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], dtype=np.dtype("u8,u8"))
    return np.sort(pairs)


def write_keep_list(frame: pd.DataFrame, rows: np.ndarray, out_dir: str) -> dict:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError("--out", f"{out_dir} is a file, not a folder")
    os.makedirs(out_dir, exist_ok=True)
    kept = frame.iloc[rows]
    with atomic_output(os.path.join(out_dir, KEY_LIST_NAME)) as tmp, open(tmp, "w") as f:
        f.write("\n".join(kept["key"].astype(str)) + "\n")
    summary = {"pool": len(frame), "kept": len(kept)}
    uids = kept["uid"].astype(str) if "uid" in kept else pd.Series([], dtype=str)
    if len(uids) and uids.str.fullmatch(r"[0-9a-fA-F]{32}").all():
        with atomic_output(os.path.join(out_dir, "uids.npy")) as tmp:
            np.save(tmp, datacomp_uids(uids.tolist()))
        summary["uids"] = "uids.npy"
    if "noisy" in frame and (frame["noisy"] >= 0).any():
        known = frame["noisy"] >= 0
        summary["noisy_fraction_pool"] = float((frame["noisy"][known] == 1).mean())
        k = kept["noisy"] >= 0
        summary["noisy_fraction_kept"] = float((kept["noisy"][k] == 1).mean()) if k.any() else float("nan")
    return summary
