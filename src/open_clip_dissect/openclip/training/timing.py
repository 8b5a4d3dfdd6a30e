"""``PhaseTimer``: seconds spent in the phases of the training loop (scoring, training).

On a CUDA device the work is asynchronous: ``time.perf_counter()`` around it measures the time to
launch it, and the work itself is billed to whichever phase next waits on the device. There the
boundaries are CUDA events on the current stream, read once when the totals are asked for (one
wait for the last event, at the log window's end), so the totals are the device's time between
the boundaries. Elsewhere the boundaries are ``time.perf_counter()``.
"""

import time
from typing import Callable, Optional

import torch

from open_clip_dissect.openclip.launch.devices import is_cuda


class PhaseTimer:
    """``start(phase)`` ends the running phase (if any) and starts ``phase``; ``stop()`` ends it;
    ``seconds(phase)`` is the total so far. ``event``: the event factory (default: a timing
    ``torch.cuda.Event`` on a CUDA device, none elsewhere)."""

    def __init__(self, device="cpu", event: Optional[Callable] = None):
        if event is None and is_cuda(device):

            def event():
                return torch.cuda.Event(enable_timing=True)

        self._event = event
        self._totals = {}
        self._pending = []  # (phase, start event, end event) whose times are not read yet
        self._phase = None
        self._since = None  # the running phase's start: an event, or perf_counter seconds

    def _now(self):
        if self._event is None:
            return time.perf_counter()
        mark = self._event()
        mark.record()
        return mark

    def start(self, phase: str) -> None:
        now = self._now()
        self._end(now)
        self._phase, self._since = phase, now

    def stop(self) -> None:
        self._end(self._now())
        self._phase = self._since = None

    def _end(self, now) -> None:
        if self._phase is None:
            return
        if self._event is None:
            self._totals[self._phase] = self._totals.get(self._phase, 0.0) + now - self._since
        else:
            self._pending.append((self._phase, self._since, now))

    def seconds(self, phase: str) -> float:
        if self._pending:
            self._pending[-1][2].synchronize()  # the last boundary done: so are all before it
            for name, begin, end in self._pending:
                self._totals[name] = self._totals.get(name, 0.0) + begin.elapsed_time(end) / 1000.0
            self._pending.clear()
        return self._totals.get(phase, 0.0)
