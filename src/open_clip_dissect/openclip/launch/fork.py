"""The calls a patched copy of ``open_clip_train`` makes (``patches/open_clip_train-*.patch``).

For labs that train from their own fork of OpenCLIP's training code and cannot switch to
``python -m open_clip_dissect.main``: the patch adds three calls to the fork's ``params.py``
and ``main.py`` (and makes its ``data.py`` decode only the members it reads); everything else
stays the fork's own code.
"""

import sys
from typing import TYPE_CHECKING, Optional

from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.launch import devices, params
from open_clip_dissect.openclip.models.configs import register_model_configs

if TYPE_CHECKING:
    from open_clip_dissect.openclip.training.train import TrainingSession


def add_args(parser) -> None:
    """Register the ``open_clip_dissect`` flags on the fork's argument parser (and the tiny
    model configs with OpenCLIP)."""
    register_model_configs()
    params.add_dissect_args(parser)


def check_args(args) -> None:
    """Validate them: a bad value ends the fork's run with the same one-line error (exit status 2)
    as ``python -m open_clip_dissect.main``. A task that sees one GPU in a distributed run gets
    ``--no-set-device-rank``, as under our entry point (``devices.device_rank_flags``)."""
    try:
        params.validate_args(args)
        bound_to_one_gpu(args)
    except InputError as exn:
        print(f"open_clip_dissect: error: {exn}", file=sys.stderr)
        raise SystemExit(2) from None
    params.warn_slow_settings(args)


def bound_to_one_gpu(args) -> None:
    """Set ``args.no_set_device_rank`` where the cluster binds each task to its own GPU (ranks 1+
    would otherwise ask for ``cuda:<local rank>`` and fail), saying so on stderr."""
    given = ["--no-set-device-rank"] if args.no_set_device_rank else []
    flags, note = devices.visible_device_flags(["--device", args.device, *given])
    if "--no-set-device-rank" in flags and not given:
        args.no_set_device_rank = True
        print(f"open_clip_dissect: {note}", file=sys.stderr)


def uses_dissect(args) -> bool:
    return args.selection != "none" or bool(args.retrieval_data) or bool(args.keep_list)


def session_for(args) -> Optional["TrainingSession"]:
    """A ``TrainingSession`` whose ``get_data``/``train_one_epoch`` take over from the fork's
    when one of our flags is used; ``None`` otherwise, so the fork runs untouched. The session's
    ``train_one_epoch`` calls the fork's own ``open_clip_train.train.train_one_epoch``."""
    if not uses_dissect(args):
        return None
    from open_clip_dissect.openclip.training.train import TrainingSession

    return TrainingSession()
