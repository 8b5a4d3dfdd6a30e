"""Collectives for ``--selection-scope global``: gather the global batch's scores, and move the
kept samples so that every rank trains on the same number (OpenCLIP's ``ClipLoss`` gather and
SigLIP's exchange need equal per-rank batch sizes)."""
import torch

from open_clip_dissect.dist.communicator import Communicator


class RankExchange:
    def __init__(self, comm: Communicator):
        self.comm = comm

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate equal-sized tensors of every rank, in rank order."""
        return self.comm.all_gather(tensor).flatten(0, 1)

    def rebalance(self, images: torch.Tensor, texts: torch.Tensor, kept: torch.Tensor, k: int):
        """``kept``: this rank's candidates that the global selection kept (any count). Returns
        this rank's ``k`` training samples: the kept samples of all ranks in (rank, position)
        order, dealt out ``k`` per rank. Costs one all-gather of the kept inputs."""
        counts = self.gather(torch.tensor([len(kept)], device=images.device)).tolist()
        if sum(counts) != k * self.comm.world_size:
            raise RuntimeError(f"global selection kept {sum(counts)} samples, expected {k} x {self.comm.world_size}")
        width = max(counts)
        pad = torch.zeros(width, dtype=torch.long, device=kept.device)
        pad[:len(kept)] = kept
        all_images = self.comm.all_gather(images[pad])       # [world, width, ...]
        all_texts = self.comm.all_gather(texts[pad])
        order = torch.cat([torch.arange(width * q, width * q + c) for q, c in enumerate(counts)])
        mine = order[self.comm.rank * k:(self.comm.rank + 1) * k].to(images.device)
        return all_images.flatten(0, 1)[mine], all_texts.flatten(0, 1)[mine]
