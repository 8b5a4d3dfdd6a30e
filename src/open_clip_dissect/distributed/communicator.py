"""``Communicator``: the one object through which the processes of a run talk (rank, world size,
process groups, and the device the collectives run on: CUDA for NCCL, the CPU for gloo).

Two groups: ``group`` moves device tensors (scores, decisions, training samples: NCCL on GPUs);
``host_group`` moves host tensors (the history's key hashes and scores, which live on the CPU, and
the step's few agreed numbers). Over NCCL every host tensor would cost a copy to the GPU and one
back, each a stall of the GPU pipeline; so beside an NCCL group the host group is a gloo group of
the same ranks. With gloo both are the same group.
"""

from typing import List, Optional

import torch
import torch.distributed as dist

from open_clip_dissect.core.types import SingleProcess

TEXT_BYTES = 1024  # the longest message text ``broadcast_text`` carries (a sample key)


class Communicator(SingleProcess):
    """Collectives over ``group``; with one process every call is the identity and nothing is
    sent (``core.types.SingleProcess`` is this class's one-process surface)."""

    def __init__(self, rank: int = 0, world_size: int = 1, group=None, device: Optional[str] = "cpu", host_group=None):
        self.rank, self.world_size, self.group = rank, world_size, group
        self.device = torch.device(device)
        self.host_group = host_group if host_group is not None else self._new_host_group()

    def _new_host_group(self):
        if self.device.type == "cpu" or self.world_size == 1 or not dist.is_initialized():
            return self.group
        # new_group is itself collective: every rank builds its Communicator at the same point
        ranks = None if self.group is None else dist.get_process_group_ranks(self.group)
        return dist.new_group(ranks=ranks, backend="gloo")

    # -- device tensors ----------------------------------------------------------------------
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``[world, *shape]``: the equal-shaped ``tensor`` of every rank, in rank order, on the
        tensor's own device."""
        if self.world_size == 1:
            return tensor.unsqueeze(0)
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous(), group=self._group_of(tensor))
        return torch.stack(parts)

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks, returned on the tensor's own device."""
        if self.world_size == 1:
            return values
        if values.device.type == "cpu" and self.host_group is not self.group:
            out = values.clone()
            dist.all_reduce(out, group=self.host_group)
            return out
        out = values.to(self.device)
        dist.all_reduce(out, group=self.group)
        return out.to(values.device)

    def all_reduce_max(self, value: int) -> int:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.host_group)
        return int(t)

    def gather(self, tensor: torch.Tensor, root: int = 0) -> Optional[torch.Tensor]:
        """``[world, *shape]`` on ``root`` (None elsewhere): the equal-shaped ``tensor`` of every rank."""
        if self.world_size == 1:
            return tensor.unsqueeze(0)
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)] if self.rank == root else None
        dist.gather(tensor, parts, dst=root, group=self._group_of(tensor))
        return torch.stack(parts) if parts is not None else None

    def scatter(self, parts: Optional[torch.Tensor], shape, dtype, device, root: int = 0) -> torch.Tensor:
        """This rank's row of ``parts`` (``[world, *shape]``, given on ``root`` only)."""
        if self.world_size == 1:
            return parts[0]
        out = torch.empty(shape, dtype=dtype, device=device)
        chunks = list(parts.contiguous().unbind(0)) if self.rank == root else None
        dist.scatter(out, chunks, src=root, group=self._group_of(out))
        return out

    def all_to_all(self, tensor: torch.Tensor, send_counts: List[int], recv_counts: List[int]) -> torch.Tensor:
        """Rows ``[sum(send_counts[:p]), +send_counts[p])`` of ``tensor`` go to rank ``p``; returns
        the rows received, in rank order (``recv_counts[q]`` from rank ``q``). Host tensors travel
        on the host group, device tensors on the device group."""
        if self.world_size == 1:
            return tensor
        out = tensor.new_empty((sum(recv_counts), *tensor.shape[1:]))
        dist.all_to_all_single(out, tensor.contiguous(), recv_counts, send_counts, group=self._group_of(tensor))
        return out

    # -- host tensors ------------------------------------------------------------------------
    def all_gather_host(self, values: torch.Tensor) -> torch.Tensor:
        """``[world, *shape]`` on the CPU: the equal-shaped host tensor of every rank."""
        return self.all_gather(values.cpu())

    def broadcast_text(self, text: Optional[str], src: int) -> str:
        """``src``'s text on every rank (None on ``src`` reads as ""); for error messages, so
        that every rank raises the same one."""
        if self.world_size == 1:
            return text or ""
        buffer = torch.zeros(TEXT_BYTES, dtype=torch.uint8)
        if self.rank == src and text:
            raw = text.encode("utf-8")[: TEXT_BYTES - 2]
            buffer[:2] = torch.tensor([len(raw) // 256, len(raw) % 256], dtype=torch.uint8)
            buffer[2 : 2 + len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        dist.broadcast(buffer, src=src, group=self.host_group)
        size = int(buffer[0]) * 256 + int(buffer[1])
        return bytes(buffer[2 : 2 + size].tolist()).decode("utf-8", errors="replace")

    def _group_of(self, tensor: torch.Tensor):
        return self.host_group if tensor.device.type == "cpu" else self.group
