"""``ShardedHistoryStore``: the history split across ranks, each key owned by one rank.

The owner of a key is ``hash mod world_size`` (the FNV-1a hash of ``history.hash_keys``, stable
across runs and machines), so memory per rank is about ``samples / world_size * 16`` bytes and
any rank may see any key (webdataset re-deals shards to ranks every epoch).

A ``get`` routes the batch's key hashes to their owners and the answers back, with
``all_to_all``s of split sizes on the host group (``Communicator``: the hashes and the store live
on the CPU, so no GPU sync): the per-owner counts, the hashes, the answers (seen, score): three
collectives. The ``update`` that follows for the same keys reuses that routing (the owners keep
the hashes they received): one collective carries the new scores and masks, and with them a few
numbers every rank tells every other (``header``, e.g. the step's NaN flag). Each rank receives
about B values per step (B: its batch size), whatever the world size; no per-sample Python. With
one process no collective is called.

Checkpoints: one file per rank (``<state>.rank<r>-of-<W>``) holding that rank's keys. A resume
with another world size reads every file of the saved world and keeps the keys it now owns, so
per-key state is identical (elastic resume).
"""

import glob
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from open_clip_dissect.core.history import FIELDS, HistoryStore
from open_clip_dissect.distributed.communicator import Communicator
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


@dataclass
class _Route:
    """Where one batch's hashes went: ``order`` sorts the batch by owner; ``send[p]`` rows went
    to rank ``p``, ``recv[q]`` came from rank ``q``; ``received``: the hashes owned here."""

    hashes: torch.Tensor
    order: torch.Tensor
    send: List[int]
    recv: List[int]
    received: torch.Tensor


class ShardedHistoryStore:
    """Same ``get``/``update``/``state_dict`` surface as ``HistoryStore``, sharded by owner."""

    def __init__(self, local: Optional[HistoryStore] = None, comm: Optional[Communicator] = None):
        self.local = local if local is not None else HistoryStore()
        self.comm = comm if comm is not None else Communicator()
        self._last: Optional[_Route] = None  # the last get's routing, reused by its update

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

    def _route(self, hashes: torch.Tensor) -> _Route:
        """Send the hashes to their owners: two collectives (the counts, then the hashes)."""
        owner = owner_of(hashes, self.world_size)
        order = torch.argsort(owner, stable=True)  # stable: batch order within each owner
        send = torch.bincount(owner, minlength=self.world_size)
        ones = [1] * self.world_size
        recv = self.comm.all_to_all(send, ones, ones).tolist()
        send = send.tolist()
        return _Route(hashes, order, send, recv, self.comm.all_to_all(hashes[order], send, recv))

    # -- the store's surface -------------------------------------------------------------------
    def get(self, hashes: torch.Tensor):
        """``(seen, score)`` for each (host) hash, from the ranks that own them. Only these two
        fields travel (the visit counts stay with their owner)."""
        if self.world_size == 1:
            return self.local.get(hashes)
        route = self._last = self._route(hashes.cpu())
        seen, score = self.local.get(route.received)
        # float64 carries the float32 scores exactly
        answer = torch.stack([seen.double(), score.double()], 1).cpu()
        back = self.comm.all_to_all(answer, route.recv, route.send)  # in owner order
        out = torch.empty_like(back)
        out[route.order] = back
        return out[:, 0] > 0.5, out[:, 1].float()

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
        """Write to the owners: right after a ``get`` (of the same hashes), one collective;
        otherwise three (the routing first). ``header``
        (a few float64 numbers, the same count on every rank): sent to every rank with the
        update; every rank's header (``[world, len]``) is passed to ``check`` (which may raise)
        before anything is written, and returned. ``score`` None: this rank writes nothing (its
        header still travels, so that every rank runs the same collectives)."""
        if self.world_size == 1:
            return self.local.update(hashes, score, epoch, score_mask, batch_size, header, check)
        hashes = hashes.cpu()
        # Whether to route again follows the call sequence alone, the same on every rank (a
        # rank-local test would give the ranks different collectives).
        route, self._last = self._last, None
        if route is None:
            route = self._route(hashes)
        elif not (route.hashes is hashes or torch.equal(route.hashes, hashes)):
            raise ValueError("update() right after get() takes the keys of that get()")
        if score is None:  # nothing to write; the header still travels (mask -1: skip the row)
            values = torch.zeros(len(hashes), 2, dtype=torch.float64)
            values[:, 1] = -1.0
        else:
            mask = torch.ones(len(hashes), dtype=torch.bool) if score_mask is None else score_mask.cpu()
            values = torch.stack([score.detach().double().cpu(), mask.double()], 1)[route.order]
        send, recv = route.send, route.recv
        extra = 0 if header is None else -(-len(header) // 2)  # header rows before each rank's values
        if extra:
            rows = torch.zeros(2 * extra, dtype=torch.float64)
            rows[: len(header)] = header
            rows = rows.reshape(extra, 2)
            values = torch.cat([part for chunk in torch.split(values, send) for part in (rows, chunk)])
            send, recv = [c + extra for c in send], [c + extra for c in recv]
        got = self.comm.all_to_all(values, send, recv)
        headers = None
        if extra:
            pieces = torch.split(got, recv)
            headers = torch.stack([p[:extra].flatten()[: len(header)] for p in pieces])
            got = torch.cat([p[extra:] for p in pieces])
        if check is not None:
            check(headers)
        # Rank order, then batch order: a key sent by two ranks keeps the lower rank's row.
        write = got[:, 1] >= 0
        received = route.received if bool(write.all()) else route.received[write]  # host tensors
        got = got if len(received) == len(got) else got[write]
        if len(received):
            self.local.update(
                received,
                got[:, 0].float(),
                epoch,
                got[:, 1] > 0.5,
                batch_size=batch_size or len(hashes) * self.world_size,
            )
        return headers

    def mean_score(self) -> Optional[float]:
        """Mean stored score over every key of every rank (None when the store is empty)."""
        local = torch.tensor(self.local.score_total(), dtype=torch.float64)  # a host tensor: the host group
        total, count = self.comm.all_reduce_sum(local).tolist()
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
