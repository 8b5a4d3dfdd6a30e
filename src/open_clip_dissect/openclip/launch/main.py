"""Drop-in replacement for ``python -m open_clip_train.main``.

``python -m open_clip_dissect.main [OpenCLIP flags] [--selection ...]`` runs OpenCLIP's own
``main`` with six names in ``open_clip_train.main`` swapped for the duration of the run:
``parse_args`` (adds our flags), ``get_data`` (key-carrying training loader),
``train_one_epoch`` (select-then-backprop), ``setup_logging`` (quieter torch), ``torch`` (whose
``save`` writes checkpoints atomically) and ``get_latest_checkpoint`` (``--resume latest`` skips
incomplete checkpoints; see ``checkpoint_files``); and torch's ``DistributedDataParallel`` by
``CpuFriendlyDDP`` (several processes on CPU). ``upstream.py`` lists them all. Nothing is
patched by ``import open_clip_dissect``. A process that sees one GPU in a distributed run (each
task confined to its bound GPU) gets OpenCLIP's ``--no-set-device-rank`` (``devices.py``). The files the flags name are checked
before OpenCLIP writes anything, and a run that fails later does not block its retry
(``run_attempt``).
"""

import logging
import sys
from contextlib import ExitStack

import open_clip_train.logger as upstream_logger
import torch

from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.launch import devices, params, run_attempt
from open_clip_dissect.openclip.launch.patching import swapped
from open_clip_dissect.openclip.models.configs import register_model_configs
from open_clip_dissect.openclip.state import checkpoint_files
from open_clip_dissect.openclip.training import train

STARTUP_NOTES = []  # lines for the log, written once OpenCLIP has set logging up


def setup_logging(log_file, level, include_host=False):
    """``open_clip_train.logger.setup_logging``, then torch's own loggers back to WARNING.

    Upstream sets every logger that exists, torch's internals included, to ``level``; torch then
    prints TorchDynamo statistics at exit of every run.
    """
    upstream_logger.setup_logging(log_file, level, include_host)
    for name in list(logging.root.manager.loggerDict):
        if name == "torch" or name.startswith("torch."):
            # (the attribute, not setLevel: each setLevel empties every logger's cache, and torch
            # has hundreds of loggers; the root's setLevel below empties them once)
            logging.getLogger(name).level = max(level, logging.WARNING)
    logging.root.setLevel(logging.root.level)
    for note in STARTUP_NOTES:
        logging.getLogger(__name__).info(note)
    STARTUP_NOTES.clear()


class CpuFriendlyDDP(torch.nn.parallel.DistributedDataParallel):
    """``DistributedDataParallel`` that drops ``device_ids`` for a module on the CPU.

    ``open_clip_train.main`` (3.3.0) always passes ``device_ids=[device]``, which torch >= 2.14
    rejects for CPU modules, so stock OpenCLIP cannot train with several CPU processes. CUDA
    modules are wrapped exactly as upstream does.
    """

    def __init__(self, module, device_ids=None, *args, **kwargs):
        if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
            device_ids = None
        super().__init__(module, device_ids, *args, **kwargs)


def patched_open_clip_train(session: "train.TrainingSession" = None, parse_args=None):
    """Our functions swapped into ``open_clip_train.main`` for the duration of a ``with`` block;
    ``session`` (default: a new one) provides the data and the epoch loop, ``parse_args``
    (default: ``params.parse_args``) the flags."""
    import open_clip_train.main as upstream_main

    session = session if session is not None else train.TrainingSession()
    stack = ExitStack()
    stack.enter_context(swapped(torch.nn.parallel, DistributedDataParallel=CpuFriendlyDDP))
    stack.enter_context(
        swapped(
            upstream_main,
            parse_args=parse_args or params.parse_args,
            get_data=session.get_data,
            train_one_epoch=session.train_one_epoch,
            setup_logging=setup_logging,
            torch=checkpoint_files.AtomicSaveTorch(),
            get_latest_checkpoint=checkpoint_files.latest_complete_checkpoint(upstream_main.get_latest_checkpoint),
        )
    )
    return stack


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    register_model_configs()
    if argv[:1] == ["--"]:  # torchrun ... -m open_clip_dissect.main -- <args> (docs/cluster.md)
        argv = argv[1:]
    import open_clip_train.main as upstream_main

    session = train.TrainingSession()
    attempt = run_attempt.RunAttempt()  # files checked before OpenCLIP writes any
    try:
        argv, note = devices.visible_device_flags(argv)  # one GPU per task: cuda:0, not cuda:<local rank>
        STARTUP_NOTES[:] = [note] if note else []
        with patched_open_clip_train(session, attempt.parse_args):
            status = upstream_main.main(argv)
        if session.selector is not None:  # the final checkpoint exists now
            session.collect_stale_states(session.args)
    except BaseException as exn:
        attempt.failed(exn)  # a failure after start-up must not block the corrected command
        if isinstance(exn, InputError):  # bad flag or file: one line, no traceback
            print(f"open_clip_dissect: error: {exn}", file=sys.stderr)
            return 2
        raise
    return 1 if status == -1 else 0


if __name__ == "__main__":
    sys.exit(main())
