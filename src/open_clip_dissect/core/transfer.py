"""Host-to-device copies that do not stall the GPU.

A blocking copy to the GPU waits for everything queued on it (the scoring pass): a pipeline stall.
A non-blocking copy from ordinary (pageable) memory may do the same, since the driver stages it
through pinned memory and may synchronise to do so. ``to_device`` stages it itself: a pinned
buffer (from PyTorch's caching host allocator, which keeps it until the copy is done), then an
asynchronous copy.
"""

import torch


def to_device(host: torch.Tensor, device) -> torch.Tensor:
    """``host`` on ``device``; from the CPU to a GPU without waiting for the GPU. (Any other copy
    is an ordinary ``.to``: one to the CPU must wait for the data.)"""
    device = torch.device(device)
    if device.type == "cpu" or host.device.type != "cpu":
        return host.to(device)
    if host.is_pinned():  # e.g. a batch the data loader pinned in its own thread
        return host.to(device, non_blocking=True)
    pinned = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
    pinned.copy_(host)
    return pinned.to(device, non_blocking=True)
