"""Loaded at start-up by a Python whose PYTHONPATH starts with this folder (the launch-script
tests): when FAKE_CUDA_RECORD is set, torch sees ``len(CUDA_VISIBLE_DEVICES)`` GPUs, asking for
another ordinal fails as CUDA does, torch.distributed's process group is not created, and the
process stops once OpenCLIP has set its device up, writing that device to
``$FAKE_CUDA_RECORD/rank<SLURM_PROCID>.device``."""

import os

if os.environ.get("FAKE_CUDA_RECORD"):
    import torch
    import torch.distributed

    VISIBLE = len(os.environ.get("CUDA_VISIBLE_DEVICES", "").split(","))

    def _check(device):
        index = torch.device(device).index
        if (index or 0) >= VISIBLE:  # "cuda" alone is the current device, 0
            raise RuntimeError("CUDA error: invalid device ordinal")

    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: VISIBLE
    torch.cuda.set_device = _check
    torch.distributed.init_process_group = lambda *args, **kwargs: None

    import open_clip_train.distributed as _distributed

    _real = _distributed.init_distributed_device

    def _stop_after_device_setup(args):
        device = _real(args)
        _check(device)
        path = os.path.join(os.environ["FAKE_CUDA_RECORD"], f"rank{os.environ.get('SLURM_PROCID', 0)}.device")
        with open(path, "w") as f:
            f.write(str(device))
        raise SystemExit(0)

    _distributed.init_distributed_device = _stop_after_device_setup
