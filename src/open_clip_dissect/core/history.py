"""``HistoryStore``: per-sample selection state keyed by sample key, 16 bytes a sample.

Keys are strings (see ``data.make_sample_key``); the store keeps their 64-bit FNV-1a hashes
(``hash_keys``, vectorised over the batch) in two sorted runs:

- ``main``: every key known at the last merge, sorted, with aligned value arrays;
- ``fresh``: keys first seen since then, sorted, small.

A lookup is a ``searchsorted`` in both runs. New keys are merged into ``fresh`` (cost
proportional to its size) and ``fresh`` into ``main`` when it outgrows ``sqrt(2 * len * B)``
(B: the batch size), which balances the two costs; each merge is a linear-time scatter of two
sorted runs, no re-sort. Per key: hash int64 (8 bytes), score float32 (4), last-seen epoch int16
(2), visit count int16 (2, saturating). With 64-bit hashes two distinct keys collide with
probability about n^2 / 2^65 (3% at a billion keys); colliding samples share one history.

Everything is tensor code on the store's device (CPU or CUDA); no per-sample Python loop.
Sharding across ranks composes this class (one store per owner rank).
"""
import math
from typing import Dict, Sequence

import numpy as np
import torch

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_INT16_MAX = torch.iinfo(torch.int16).max
FIELDS = ("hash", "score", "epoch", "visits")


def hash_keys(keys: Sequence[str]) -> torch.Tensor:
    """64-bit FNV-1a of each key's UTF-8 bytes, as int64; vectorised over the batch (one numpy
    operation per byte column, not per key). Stable across runs, processes and versions."""
    if len(keys) == 0:
        return torch.empty(0, dtype=torch.int64)
    raw = np.char.encode(np.asarray(keys, dtype=np.str_), "utf-8")
    width = raw.dtype.itemsize
    lengths = np.char.str_len(raw)
    columns = np.frombuffer(raw.tobytes(), dtype=np.uint8).reshape(len(raw), width).astype(np.uint64)
    h = np.full(len(raw), _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(width):
            step = (h ^ columns[:, j]) * _FNV_PRIME
            h = np.where(j < lengths, step, h)
    return torch.from_numpy(h.view(np.int64).copy())


def _merge_sorted(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Merge two runs sorted by disjoint ``hash`` in linear time (scatter by rank)."""
    n, m = len(a["hash"]), len(b["hash"])
    device = a["hash"].device
    pos_b = torch.searchsorted(a["hash"], b["hash"]) + torch.arange(m, device=device)
    from_a = torch.ones(n + m, dtype=torch.bool, device=device)
    from_a[pos_b] = False
    out = {}
    for name in FIELDS:
        merged = torch.empty(n + m, dtype=a[name].dtype, device=device)
        merged[pos_b] = b[name]
        merged[from_a] = a[name]
        out[name] = merged
    return out


def _empty_run(device) -> Dict[str, torch.Tensor]:
    return {"hash": torch.empty(0, dtype=torch.int64, device=device),
            "score": torch.empty(0, dtype=torch.float32, device=device),
            "epoch": torch.empty(0, dtype=torch.int16, device=device),
            "visits": torch.empty(0, dtype=torch.int16, device=device)}


class HistoryStore:
    """Per-sample state (score, last-seen epoch, visit count) addressed by key hash."""

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.main = _empty_run(self.device)
        self.fresh = _empty_run(self.device)

    def __len__(self) -> int:
        return len(self.main["hash"]) + len(self.fresh["hash"])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for run in (self.main, self.fresh) for t in run.values())

    @staticmethod
    def _find(run, hashes):
        pos = torch.searchsorted(run["hash"], hashes)
        clamped = pos.clamp_max(max(len(run["hash"]) - 1, 0))
        found = (pos < len(run["hash"])) & (run["hash"][clamped] == hashes) if len(run["hash"]) else \
            torch.zeros_like(hashes, dtype=torch.bool)
        return found, clamped

    def get(self, hashes: torch.Tensor, with_visits: bool = False):
        """``(seen, score)`` for each hash, zeros where the key is unknown; with ``with_visits``
        also the last-seen epoch and the visit count: ``(seen, score, epoch, visits)``."""
        hashes = hashes.to(self.device)
        seen = torch.zeros(len(hashes), dtype=torch.bool, device=self.device)
        out = {name: torch.zeros(len(hashes), dtype=self.main[name].dtype, device=self.device)
               for name in (("score", "epoch", "visits") if with_visits else ("score",))}
        for run in (self.main, self.fresh):
            found, idx = self._find(run, hashes)
            seen |= found
            for name, values in out.items():
                values[found] = run[name][idx[found]]
        return (seen, *out.values())

    def update(self, hashes: torch.Tensor, score: torch.Tensor, epoch: int,
               score_mask: torch.Tensor = None, batch_size: int = None) -> None:
        """Record a visit of each key at ``epoch``; write ``score`` where ``score_mask`` (all if
        None). Unknown keys are inserted (score 0 where masked out). A key repeated within the
        batch keeps its first row."""
        hashes = hashes.to(self.device)
        score = score.to(self.device, torch.float32)
        mask = torch.ones_like(hashes, dtype=torch.bool) if score_mask is None else score_mask.to(self.device)
        uniq, inverse = torch.unique(hashes, return_inverse=True)
        first = torch.full((len(uniq),), len(hashes), device=self.device, dtype=torch.int64)
        first.scatter_reduce_(0, inverse, torch.arange(len(hashes), device=self.device), "amin")
        hashes, score, mask = uniq, score[first], mask[first]

        known = torch.zeros(len(hashes), dtype=torch.bool, device=self.device)
        for run in (self.main, self.fresh):
            found, idx = self._find(run, hashes)
            known |= found
            rows = idx[found]
            run["score"][rows] = torch.where(mask[found], score[found], run["score"][rows])
            run["epoch"][rows] = epoch
            run["visits"][rows] = (run["visits"][rows] + 1).clamp_max(_INT16_MAX)

        new = ~known
        if new.any():
            count = int(new.sum())
            added = {"hash": hashes[new],  # already sorted: torch.unique sorts
                     "score": torch.where(mask[new], score[new], torch.zeros_like(score[new])),
                     "epoch": torch.full((count,), epoch, dtype=torch.int16, device=self.device),
                     "visits": torch.ones(count, dtype=torch.int16, device=self.device)}
            self.fresh = _merge_sorted(self.fresh, added)
            limit = math.sqrt(2.0 * max(len(self), 1) * max(batch_size or len(hashes), 1))
            if len(self.fresh["hash"]) > limit:
                self.compact()

    def score_total(self):
        """``(sum of the stored scores, number of keys)``, the sum in float64."""
        total = sum(run["score"].double().sum() for run in (self.main, self.fresh))
        return float(total), len(self)

    def mean_score(self):
        """Mean stored score over every key (None when the store is empty)."""
        total, count = self.score_total()
        return total / count if count else None

    def compact(self) -> None:
        """Merge the fresh run into the main one."""
        if len(self.fresh["hash"]):
            self.main = _merge_sorted(self.main, self.fresh)
            self.fresh = _empty_run(self.device)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        self.compact()  # copies: the store updates its tensors in place
        return {name: t.to("cpu", copy=True) for name, t in self.main.items()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        missing = [name for name in FIELDS if name not in state]
        if missing:
            raise KeyError(f"history state lacks {missing}")
        hashes = state["hash"]
        if len(hashes) > 1 and not bool((hashes[1:] > hashes[:-1]).all()):
            raise ValueError("history state is not sorted by key hash")
        self.main = {name: state[name].to(self.device, copy=True) for name in FIELDS}
        self.fresh = _empty_run(self.device)
