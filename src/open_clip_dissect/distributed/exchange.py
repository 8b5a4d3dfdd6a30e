"""Global scope (``--selection-scope global``): after rank 0's decision on the global batch
(``core.Selector``), move kept samples so that every rank trains on the same number ``k``
(OpenCLIP's ``ClipLoss`` gather and SigLIP's exchange need equal per-rank batch sizes).

Only what must move moves: each rank trains on up to ``k`` of its own kept samples; the kept
samples beyond ``k`` of the ranks that kept more fill, in (rank, position) order, the places of
the ranks that kept fewer, in rank order. One ``all_to_all`` with split sizes carries them, image
and text bytes side by side in one row; a rank receives at most ``k`` samples, whatever the world
size, and nothing moves (no collective) when every rank kept exactly ``k``.
"""

import math
from typing import List, Optional

import torch

from open_clip_dissect.distributed.communicator import Communicator


def moves(counts: List[int], k: int) -> List[List[int]]:
    """``moves[q][p]``: how many of rank ``q``'s kept samples rank ``p`` trains on (``q != p``),
    given every rank's kept count; the same on every rank."""
    world = len(counts)
    surplus = [max(c - k, 0) for c in counts]
    deficit = [max(k - c, 0) for c in counts]
    out = [[0] * world for _ in range(world)]
    s_start = 0
    for q in range(world):
        d_start = 0
        for p in range(world):
            low, high = max(s_start, d_start), min(s_start + surplus[q], d_start + deficit[p])
            out[q][p] = max(high - low, 0)
            d_start += deficit[p]
        s_start += surplus[q]
    return out


def as_rows(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """``[n, bytes]`` uint8: each sample's image bytes, then its text bytes."""
    return torch.cat([_flat(images).view(torch.uint8), _flat(texts).view(torch.uint8)], 1)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(len(t), math.prod(t.shape[1:])).contiguous()


def from_rows(rows: torch.Tensor, images: torch.Tensor, texts: torch.Tensor):
    """``as_rows`` undone, with the dtypes and per-sample shapes of ``images`` and ``texts``."""
    width = math.prod(images.shape[1:]) * images.element_size()
    # copies aligned for their dtypes (a slice of the byte rows may start mid-element)
    image_part = rows[:, :width].clone(memory_format=torch.contiguous_format).view(images.dtype)
    text_part = rows[:, width:].clone(memory_format=torch.contiguous_format).view(texts.dtype)
    return image_part.reshape(-1, *images.shape[1:]), text_part.reshape(-1, *texts.shape[1:])


class RankExchange:
    def __init__(self, comm: Communicator):
        self.comm = comm
        self.counts: Optional[List[int]] = None  # every rank's kept count of this step (Selector)

    def rebalance(self, images: torch.Tensor, texts: torch.Tensor, kept: torch.Tensor, k: int):
        """``kept``: this rank's candidates that the global selection kept (any count, in
        position order). Returns this rank's ``k`` training samples: its first ``min(len(kept),
        k)`` kept samples, then those it receives from the ranks that kept more than ``k``.

        The kept counts of every rank come from the step's decision (``Selector`` sets
        ``counts``); without them one host all-gather of the counts (no device sync) finds them."""
        counts, self.counts = self.counts, None
        if counts is None:
            counts = self.comm.all_gather_host(torch.tensor([len(kept)], dtype=torch.int64)).flatten().tolist()
        world, rank = self.comm.world_size, self.comm.rank
        if sum(counts) != k * world:
            raise RuntimeError(f"global selection kept {sum(counts)} samples, expected {k} x {world}")
        if counts[rank] != len(kept):
            raise RuntimeError(f"rank {rank} holds {len(kept)} kept samples, the decision says {counts[rank]}")
        plan = moves(counts, k)
        own = kept[:k]
        if not any(any(row) for row in plan):  # every rank kept exactly k: nothing moves
            return images[own], texts[own]
        send = plan[rank]
        recv = [plan[q][rank] for q in range(world)]
        surplus = kept[k:]  # already in destination order: surplus fills deficits in rank order
        rows = self.comm.all_to_all(as_rows(images[surplus], texts[surplus]), send, recv)
        got_images, got_texts = from_rows(rows, images, texts)
        return torch.cat([images[own], got_images]), torch.cat([texts[own], got_texts])
