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

from open_clip_dissect.core.transfer import to_device

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
    """Merge two runs sorted by disjoint ``hash`` in linear time (scatter by rank); no host sync."""
    n, m = len(a["hash"]), len(b["hash"])
    device = a["hash"].device
    gap = torch.searchsorted(a["hash"], b["hash"])  # b[j] goes just before a[gap[j]]
    before = torch.zeros(n + 1, dtype=torch.int64, device=device)
    before.index_add_(0, gap, torch.ones(m, dtype=torch.int64, device=device))
    pos_a = torch.arange(n, device=device) + torch.cumsum(before, 0)[:n]
    pos_b = gap + torch.arange(m, device=device)
    out = {}
    for name in FIELDS:
        merged = torch.empty(n + m, dtype=a[name].dtype, device=device)
        merged[pos_a] = a[name]
        merged[pos_b] = b[name]
        out[name] = merged
    return out


def _empty_run(device) -> Dict[str, torch.Tensor]:
    return {
        "hash": torch.empty(0, dtype=torch.int64, device=device),
        "score": torch.empty(0, dtype=torch.float32, device=device),
        "epoch": torch.empty(0, dtype=torch.int16, device=device),
        "visits": torch.empty(0, dtype=torch.int16, device=device),
    }


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
        """For each hash: found in the (non-empty) run, and its position there (else a neighbour's)."""
        pos = torch.searchsorted(run["hash"], hashes)
        clamped = pos.clamp_max(len(run["hash"]) - 1)
        return (pos < len(run["hash"])) & (run["hash"][clamped] == hashes), clamped

    def _runs(self):
        return [run for run in (self.main, self.fresh) if len(run["hash"])]

    def get(self, hashes: torch.Tensor, with_visits: bool = False):
        """``(seen, score)`` for each hash, zeros where the key is unknown; with ``with_visits``
        also the last-seen epoch and the visit count: ``(seen, score, epoch, visits)``. No host
        sync (a CUDA store answers on the GPU)."""
        hashes = to_device(hashes, self.device)
        seen = torch.zeros(len(hashes), dtype=torch.bool, device=self.device)
        out = {
            name: torch.zeros(len(hashes), dtype=self.main[name].dtype, device=self.device)
            for name in (("score", "epoch", "visits") if with_visits else ("score",))
        }
        for run in self._runs():
            found, idx = self._find(run, hashes)
            seen |= found
            for name, values in out.items():
                out[name] = torch.where(found, run[name][idx], values)
        return (seen, *out.values())

    def update(
        self,
        hashes: torch.Tensor,
        score: torch.Tensor,
        epoch: int,
        score_mask: torch.Tensor = None,
        batch_size: int = None,
        header: torch.Tensor = None,
        check=None,
    ):
        """Record a visit of each key at ``epoch``; write ``score`` where ``score_mask`` (all if
        None). Unknown keys are inserted (score 0 where masked out). A key repeated within the
        batch keeps its first row.

        ``header``/``check``: the surface of ``distributed.ShardedHistoryStore``, where a few numbers of
        every rank travel with the update; here the one process's ``header[None]`` is passed to
        ``check`` (which may raise) before anything is written, and returned. ``score`` None:
        nothing is written.

        One host sync on a CUDA store (how many keys are new); none on the GPU for a CPU store.
        """
        headers = None if header is None else header[None]
        if check is not None:
            check(headers)
        if score is None:
            return headers
        hashes = to_device(hashes, self.device)
        score = to_device(score, self.device).float()
        n = len(hashes)
        mask = (
            torch.ones(n, dtype=torch.bool, device=self.device)
            if score_mask is None
            else to_device(score_mask, self.device)
        )
        # Sorted view of the batch; each key's first row (the stable sort keeps rows in batch order).
        order = torch.argsort(hashes, stable=True)
        ordered = hashes[order]
        starts = torch.ones(n, dtype=torch.bool, device=self.device)
        starts[1:] = ordered[1:] != ordered[:-1]
        positions = torch.arange(n, device=self.device)
        first = order[torch.cummax(torch.where(starts, positions, 0), 0).values]  # [n] sorted -> first row

        known = torch.zeros(n, dtype=torch.bool, device=self.device)
        for run in self._runs():
            found, idx = self._find(run, hashes)
            known |= found
            # Every row writes the position it found (or a neighbour's): the value that position
            # takes from this batch, the same for every row writing it (no write order matters).
            key = run["hash"][idx]
            at = torch.searchsorted(ordered, key).clamp_max(n - 1)
            visited = ordered[at] == key
            row = first[at]
            old_score, old_epoch, old_visits = run["score"][idx], run["epoch"][idx], run["visits"][idx]
            run["score"][idx] = torch.where(visited & mask[row], score[row], old_score)
            run["epoch"][idx] = torch.where(visited, torch.full_like(old_epoch, epoch), old_epoch)
            run["visits"][idx] = torch.where(visited, (old_visits + 1).clamp_max(_INT16_MAX), old_visits)

        new = starts & ~known[order]  # sorted positions of the first rows of unknown keys
        count = int(new.sum()) if n else 0  # the one host sync of a CUDA store
        if count:
            at = torch.argsort((~new).to(torch.uint8), stable=True)[:count]  # no nonzero(): no sync
            row = first[at]
            added = {
                "hash": ordered[at],  # sorted
                "score": torch.where(mask[row], score[row], torch.zeros_like(score[row])),
                "epoch": torch.full((count,), epoch, dtype=torch.int16, device=self.device),
                "visits": torch.ones(count, dtype=torch.int16, device=self.device),
            }
            self.fresh = _merge_sorted(self.fresh, added)
            limit = math.sqrt(2.0 * max(len(self), 1) * max(batch_size or n, 1))
            if len(self.fresh["hash"]) > limit:
                self.compact()
        return headers

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
