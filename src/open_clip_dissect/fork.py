"""The calls a patched copy of ``open_clip_train`` makes (``patches/open_clip_train-*.patch``).

For labs that train from their own fork of OpenCLIP's training code and cannot switch to
``python -m open_clip_dissect.main``: the patch adds three calls to the fork's ``params.py``
and ``main.py`` and nothing else; everything else stays the fork's own code.
"""
from typing import TYPE_CHECKING, Optional

from open_clip_dissect import params

if TYPE_CHECKING:
    from open_clip_dissect.train import TrainingSession


def add_args(parser) -> None:
    """Register the ``open_clip_dissect`` flags on the fork's argument parser."""
    params.add_dissect_args(parser)


def check_args(args) -> None:
    """Validate them (fails naming the flag, as ``python -m open_clip_dissect.main`` does)."""
    params.validate_args(args)


def uses_dissect(args) -> bool:
    return args.selection != "none" or bool(args.retrieval_data) or bool(args.keep_list)


def session_for(args) -> Optional["TrainingSession"]:
    """A ``TrainingSession`` whose ``get_data``/``train_one_epoch`` take over from the fork's
    when one of our flags is used; ``None`` otherwise, so the fork runs untouched. The session's
    ``train_one_epoch`` calls the fork's own ``open_clip_train.train.train_one_epoch``."""
    if not uses_dissect(args):
        return None
    from open_clip_dissect.train import TrainingSession

    return TrainingSession()
