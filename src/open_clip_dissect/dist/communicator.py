"""``Communicator``: the one object through which the processes of a run talk (rank, world size,
process group, and the device the collectives run on: CUDA for NCCL, the CPU for gloo)."""
from typing import Optional

import torch
import torch.distributed as dist

from open_clip_dissect.core.selector import SingleProcess


class Communicator(SingleProcess):
    """Collectives over ``group``; with one process every call is the identity and nothing is
    sent (``core.selector.SingleProcess`` is this class's one-process surface)."""

    def __init__(self, rank: int = 0, world_size: int = 1, group=None, device: Optional[str] = "cpu"):
        self.rank, self.world_size, self.group = rank, world_size, group
        self.device = torch.device(device)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``[world, *shape]``: the equal-shaped ``tensor`` of every rank, in rank order, on the
        tensor's own device."""
        if self.world_size == 1:
            return tensor.unsqueeze(0)
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous(), group=self.group)
        return torch.stack(parts)

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks, returned on the tensor's own device."""
        if self.world_size == 1:
            return values
        out = values.to(self.device)
        dist.all_reduce(out, group=self.group)
        return out.to(values.device)

    def all_reduce_max(self, value: int) -> int:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return int(t)
