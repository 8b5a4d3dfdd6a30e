"""Noise audit: how well a selection separates clean pairs from known-noisy ones (pure tensor code)."""
from typing import Dict

import torch

from open_clip_dissect.core.keyset import KeySet


def auroc(score: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` (bool) vs the rest, ties counted
    half (Mann-Whitney U with average ranks). NaN when either class is empty."""
    score = score.double().flatten()
    positive = positive.bool().flatten()
    n_pos = int(positive.sum())
    n_neg = len(score) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, inverse, counts = torch.unique(score, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()           # 1-based rank of the last of each tie group
    average_rank = ends - (counts.double() - 1) / 2   # mean rank within the group
    rank_sum = average_rank[inverse][positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def audit(rank: torch.Tensor, kept: torch.Tensor, noisy: torch.Tensor) -> Dict[str, float]:
    """Audit of one epoch's decisions on the samples whose label is known (``noisy`` >= 0).

    - ``kept_precision``: fraction of kept samples that are clean;
    - ``clean_recall``: fraction of clean samples that were kept;
    - ``auroc``: how well the ranking score puts clean above noisy (0.5 = chance);
    - ``random_precision``: the clean fraction of all scored samples (what random keeps).
    """
    known = noisy >= 0
    if not bool(known.any()):
        return {}
    clean = (noisy == 0) & known
    kept_known = kept & known
    n_kept = int(kept_known.sum())
    n_clean = int(clean.sum())
    return {
        "kept_precision": float((kept_known & clean).sum()) / n_kept if n_kept else float("nan"),
        "clean_recall": float((kept & clean).sum()) / n_clean if n_clean else float("nan"),
        "auroc": auroc(rank[known], clean[known]),
        "random_precision": n_clean / int(known.sum()),
        "labelled": float(known.sum()),
    }


class NoisyKeyList:
    """``--noisy-keys FILE``: one key per line; listed keys are noisy, all others clean."""

    def __init__(self, path: str):
        self.keys = KeySet.from_file(path, "--noisy-keys")

    def __len__(self):
        return len(self.keys)

    def label(self, hashes: torch.Tensor) -> torch.Tensor:
        """int8 per hash: 1 if listed (noisy), else 0."""
        return self.keys.contains(hashes).to(torch.int8)
