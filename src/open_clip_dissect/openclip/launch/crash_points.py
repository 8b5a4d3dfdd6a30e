"""Deterministic crash points for the crash tests: ``OPEN_CLIP_DISSECT_KILL_AT`` names one
moment of a run at which the process sends itself SIGKILL, as a preempted cluster job dies.

Format: ``<point>:<epoch>[:<step>][@<rank>]`` with ``point`` one of ``train`` (before the given
step of the epoch trains; default step 0), ``after-state`` (the epoch's selection state is
written, OpenCLIP's evaluation and checkpoint are still to come) and ``after-checkpoint``
(OpenCLIP's checkpoint of the epoch is written). ``epoch`` counts from 0 as OpenCLIP's does.
Unset (always, outside the tests), nothing happens.
"""

import os
import signal
from typing import Optional

VARIABLE = "OPEN_CLIP_DISSECT_KILL_AT"
POINTS = ("train", "after-state", "after-checkpoint")


def parse(spec: str):
    """``(point, epoch, step, rank)`` of a spec; ``rank`` None: every rank."""
    where, _, rank = spec.partition("@")
    point, *numbers = where.split(":")
    if point not in POINTS or not 1 <= len(numbers) <= 2:
        raise ValueError(f"{VARIABLE}={spec!r}: expected <point>:<epoch>[:<step>][@<rank>], point in {POINTS}")
    epoch = int(numbers[0])
    step = int(numbers[1]) if len(numbers) == 2 else 0
    return point, epoch, step, int(rank) if rank else None


def kill_if_asked(point: str, epoch: int, step: int = 0, rank: int = 0) -> None:
    spec = os.environ.get(VARIABLE)
    if not spec:
        return
    asked: Optional[tuple] = parse(spec)
    if asked[:3] == (point, epoch, step) and asked[3] in (None, rank):
        os.kill(os.getpid(), signal.SIGKILL)
