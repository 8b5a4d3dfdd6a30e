"""``ShardedHistoryStore``: the history split across ranks, each key owned by one rank.

The owner of a key is ``hash mod world_size`` (the FNV-1a hash of ``history.hash_keys``, stable
across runs and machines), so memory per rank is about ``samples / world_size * 16`` bytes and
any rank may see any key (webdataset re-deals shards to ranks every epoch).

Each ``get``/``update`` is one exchange: the ranks all-gather the batch's (padded) key hashes
(and, for an update, the new scores); every owner answers for, or applies the update to, the
keys it owns; a sum all-reduce returns the answers (seen, score) to every rank (each key has
exactly one owner, so the sum is a routing). That is O(world x B) values per rank and step, two
collectives, no per-sample Python. With one process no collective is called.

Checkpoints: one file per rank (``<state>.rank<r>-of-<W>``) holding that rank's keys. A resume
with another world size reads every file of the saved world and keeps the keys it now owns, so
per-key state is identical (elastic resume).
"""
import glob
import re
from typing import Dict, List, Optional

import torch
from open_clip_dissect.core.history import FIELDS, HistoryStore
from open_clip_dissect.dist.communicator import Communicator
from open_clip_dissect.errors import InputError


def owner_of(hashes: torch.Tensor, world_size: int) -> torch.Tensor:
    return torch.remainder(hashes, world_size)


def rank_file(path: str, rank: int, world_size: int) -> str:
    return f"{path}.rank{rank}-of-{world_size}"


def saved_rank_files(path: str, check: bool = True) -> List[str]:
    """The per-rank files of one saved state, in rank order; checks that none is missing."""
    found = {}
    for name in glob.glob(glob.escape(path) + ".rank*-of-*"):
        match = re.fullmatch(r".*\.rank(\d+)-of-(\d+)", name)
        if match:
            found[(int(match.group(1)), int(match.group(2)))] = name
    worlds = {w for _, w in found}
    if not found or not check:
        return sorted(found.values())
    if len(worlds) != 1:
        raise InputError("--resume", f"{path} has rank files of several world sizes: {sorted(worlds)}")
    world = worlds.pop()
    missing = [r for r in range(world) if (r, world) not in found]
    if missing:
        raise InputError("--resume", f"{path}: rank files {missing} of {world} are missing")
    return [found[(r, world)] for r in range(world)]


class ShardedHistoryStore:
    """Same ``get``/``update``/``state_dict`` surface as ``HistoryStore``, sharded by owner."""

    def __init__(self, local: Optional[HistoryStore] = None, comm: Optional[Communicator] = None):
        self.local = local if local is not None else HistoryStore()
        self.comm = comm if comm is not None else Communicator()

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def world_size(self) -> int:
        return self.comm.world_size

    def __len__(self) -> int:
        """Keys held by this rank."""
        return len(self.local)

    @property
    def nbytes(self) -> int:
        return self.local.nbytes

    def _exchange(self, hashes: torch.Tensor, *payload: torch.Tensor):
        """All ranks' hashes (and payloads), the padded size, and the mask of the keys owned here."""
        lengths = self.comm.all_gather_padded(torch.tensor([len(hashes)], dtype=torch.int64), 1)[:, 0]
        size = int(lengths.max())
        all_hashes = self.comm.all_gather_padded(hashes, size)
        valid = torch.arange(size)[None, :] < lengths[:, None]
        mine = valid & (owner_of(all_hashes, self.world_size) == self.rank)
        gathered = [self.comm.all_gather_padded(p, size) for p in payload]
        return all_hashes, size, mine, gathered

    # -- the store's surface -------------------------------------------------------------------
    def get(self, hashes: torch.Tensor):
        """``(seen, score)`` for each hash, from the ranks that own them. Only these two fields
        travel (the visit counts stay with their owner)."""
        if self.world_size == 1:
            return self.local.get(hashes)
        all_hashes, size, mine, _ = self._exchange(hashes.cpu())
        seen, score = self.local.get(all_hashes[mine])
        # float64 carries the float32 scores exactly through the sum all-reduce
        answer = torch.zeros(2, self.world_size, size, dtype=torch.float64)
        answer[0][mine] = seen.cpu().double()
        answer[1][mine] = score.cpu().double()
        row = self.comm.all_reduce_sum(answer)[:, self.rank, :len(hashes)]
        return row[0] > 0.5, row[1].float()

    def update(self, hashes: torch.Tensor, score: torch.Tensor, epoch: int,
               score_mask: torch.Tensor = None, batch_size: int = None) -> None:
        if self.world_size == 1:
            return self.local.update(hashes, score, epoch, score_mask, batch_size)
        mask = torch.ones(len(hashes), dtype=torch.bool) if score_mask is None else score_mask.cpu()
        all_hashes, _, mine, (all_scores, all_masks) = self._exchange(
            hashes.cpu(), score.detach().float().cpu(), mask.to(torch.uint8))
        # Rank order, then batch order: a key sent by two ranks keeps the lower rank's row.
        self.local.update(all_hashes[mine], all_scores[mine], epoch, all_masks[mine].bool(),
                          batch_size=batch_size or len(hashes) * self.world_size)

    def mean_score(self) -> Optional[float]:
        """Mean stored score over every key of every rank (None when the store is empty)."""
        total, count = self.comm.all_reduce_sum(torch.tensor(self.local.score_total(), dtype=torch.float64)).tolist()
        return total / count if count else None

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.local.state_dict()

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Load this rank's share of a state (keys owned by other ranks are dropped)."""
        keep = owner_of(state["hash"], self.world_size) == self.rank
        self.local.load_state_dict({name: state[name][keep] for name in FIELDS})

    def load_rank_states(self, states: List[Dict[str, torch.Tensor]]) -> None:
        """Elastic resume: from the history states of every rank file of a saved state, keep the
        keys owned here."""
        parts = []
        for state in states:
            keep = owner_of(state["hash"], self.world_size) == self.rank
            parts.append({name: state[name][keep] for name in FIELDS})
        merged = {name: torch.cat([p[name] for p in parts]) for name in FIELDS}
        order = torch.argsort(merged["hash"])
        self.local.load_state_dict({name: merged[name][order] for name in FIELDS})
