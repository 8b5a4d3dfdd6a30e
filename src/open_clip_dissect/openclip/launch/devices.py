"""Device decisions taken once per run, testable without a GPU: whether host batches are pinned,
and whether a process uses ``cuda:<local rank>`` or the one device it can see."""

import argparse
import os
from typing import Optional

import torch

from open_clip_dissect.errors import InputError


def is_cuda(device) -> bool:
    """``device`` is a CUDA device and CUDA is there (OpenCLIP falls back to the CPU otherwise)."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def pin_host_batches(device) -> bool:
    """Whether host batches are pinned: a ``non_blocking`` copy to a CUDA device from pageable
    memory is synchronous, from pinned memory it is not. Never without CUDA (nothing to pin for)."""
    return is_cuda(device)


def device_rank_flags(
    argv,
    visible_gpus: int,
    local_rank: int,
    distributed: bool,
    device: str = "cuda",
    local_processes: Optional[int] = None,
):
    """``(argv, note)`` for OpenCLIP's device set-up, which in a distributed run takes
    ``cuda:<local rank>``. A task that sees a single GPU (a cluster that confines each task to its
    bound GPU: ``srun --accel-bind=g`` or ``--gpu-bind`` with device cgroups, or
    ``CUDA_VISIBLE_DEVICES`` holding one id) sees it as ``cuda:0``, and ranks 1+ would fail with
    "invalid device ordinal": there ``--no-set-device-rank`` is added (the device stays ``cuda``,
    the one visible) and ``note`` says so for the log (else None). ``InputError`` when several
    GPUs are visible but not one for this local rank, or when torchrun starts more processes on
    the node (``local_processes``) than it has GPUs: they would share one."""
    if "--no-set-device-rank" in argv or not distributed or visible_gpus == 0 or torch.device(device).type != "cuda":
        return list(argv), None
    if local_processes is not None and local_processes > visible_gpus:
        raise InputError(
            "--device",
            f"{local_processes} processes on this node share {visible_gpus} visible CUDA "
            f"device(s); start one process per GPU (torchrun --nproc_per_node)",
        )
    if visible_gpus == 1:
        return [*argv, "--no-set-device-rank"], (
            f"local rank {local_rank} sees one CUDA device: it trains on that one, cuda:0 "
            f"(--no-set-device-rank added: the cluster binds each task to its GPU)"
        )
    if local_rank >= visible_gpus:
        raise InputError(
            "--device",
            f"local rank {local_rank} would use cuda:{local_rank}, but this process "
            f"sees {visible_gpus} CUDA devices; start one task per GPU, or bind each "
            f"task to one GPU",
        )
    return list(argv), None


def visible_device_flags(argv):
    """``device_rank_flags`` for this process: the GPUs it sees, and its local rank and whether
    the run is distributed as OpenCLIP reads them (``open_clip_train.distributed``)."""
    from open_clip_train.distributed import is_using_distributed, world_info_from_env

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--device", default="cuda")  # OpenCLIP's default
    device = parser.parse_known_args(list(argv))[0].device
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    local_rank, _, _ = world_info_from_env()
    local_processes = os.environ.get("LOCAL_WORLD_SIZE")  # set by torchrun: its processes on this node
    return device_rank_flags(
        argv, visible, local_rank, is_using_distributed(), device, int(local_processes) if local_processes else None
    )
