"""Finding the early-learning point without noise labels: the epoch after which a model trained on
noisy pairs stops mostly learning the clean ones and starts memorising the mismatched ones.

DISSect's ``delta = hist - curr`` ranks the noisy pairs last only after that point (before it,
the clean pairs' CLIPScore rises fastest), so a warm-up has to reach it. Each detector reads one
epoch-level signal (``EpochSignals``), measured on the run itself, and fires once:

- ``retrieval``: the held-out retrieval R@sum (``--retrieval-data``) has not beaten its best for
  ``patience`` evaluations; the point is the best epoch.
- ``loss``: the mean scoring-pass InfoNCE improved on the previous epoch by less than
  ``min_improvement`` (relative).
- ``spread``: the standard deviation of the epoch's CLIPScores has not beaten its running maximum
  for ``patience`` epochs (the shrinking spread of the paper's Fig. 3a); the point is the maximum.

Two rules guard all three against a noisy start. A detector compares the trailing mean of the
last ``window`` measurements, not single ones, so that one epoch's swing neither makes nor
breaks a peak. And it is armed only once that mean has improved on the first measurement by
more than ``min_gain`` (relative): an early-learning point cannot come before the model has
learned anything, so a dip in the first epochs (a held-out R@sum that falls from 12.2 to 9.8
before it climbs to 50, as measured on real digits) does not count as a peak already passed.

A detector fires at the end of an epoch; the warm-up then ends and selection starts with the
next epoch (``switch_epoch``). Epochs are 0-based, as in the training loop.
"""

import math
from dataclasses import asdict, dataclass
from typing import Optional

SIGNALS = ("retrieval", "loss", "spread")
# The defaults of the detector and of the --dissect-auto-* flags (one place: the flags, the
# strategies and the paper bench's replay all read these).
DEFAULT_SIGNAL, DEFAULT_PATIENCE, DEFAULT_MIN_IMPROVEMENT = "retrieval", 2, 0.05
DEFAULT_WINDOW, DEFAULT_MIN_GAIN = 2, 0.1
SIGNAL_NAMES = {"retrieval": "retrieval R@sum", "loss": "mean scoring-pass loss", "spread": "CLIPScore std"}


@dataclass
class EpochSignals:
    """One epoch's measurements over every candidate of every rank (None: not measured)."""

    candidates: int = 0
    mean_loss: Optional[float] = None  # mean per-sample symmetric InfoNCE of the scoring pass
    clipscore_mean: Optional[float] = None  # mean CLIPScore of the scoring pass
    clipscore_std: Optional[float] = None  # its standard deviation over the epoch's candidates
    retrieval: Optional[float] = None  # held-out retrieval R@sum measured after the epoch

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class EarlyLearningDetector:
    """Watches one signal epoch by epoch; ``update`` returns a log line the epoch it fires."""

    def __init__(
        self,
        signal: str = DEFAULT_SIGNAL,
        patience: int = DEFAULT_PATIENCE,
        min_improvement: float = DEFAULT_MIN_IMPROVEMENT,
        window: int = DEFAULT_WINDOW,
        min_gain: float = DEFAULT_MIN_GAIN,
    ):
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.signal, self.patience, self.min_improvement = signal, patience, min_improvement
        self.window, self.min_gain = window, min_gain
        self.recent = []  # the last ``window`` measurements, oldest first
        self.first = None  # the first measurement: the baseline the arming gain is taken against
        self.armed = False  # whether the smoothed signal has clearly improved on the first one
        self.best = None  # (epoch, smoothed value): the running maximum since armed (retrieval, spread)
        self.previous = None  # (epoch, smoothed value): the last measurement (the loss compares with it)
        self.below = 0  # measurements since the best
        self.detected_epoch = None  # the early-learning point
        self.fired_epoch = None  # the epoch at whose end the detector fired

    @property
    def switch_epoch(self) -> Optional[int]:
        """The first epoch after the warm-up (None: not detected yet)."""
        return None if self.fired_epoch is None else self.fired_epoch + 1

    def value(self, signals: EpochSignals) -> Optional[float]:
        value = {"retrieval": signals.retrieval, "loss": signals.mean_loss, "spread": signals.clipscore_std}[
            self.signal
        ]
        return None if value is None or math.isnan(value) else float(value)

    def _gain(self, smoothed: float) -> float:
        """How much better than the first measurement, relative (the loss improves downwards)."""
        if self.first == 0:
            return math.inf if smoothed > 0 and self.signal != "loss" else 0.0
        change = (self.first - smoothed) if self.signal == "loss" else (smoothed - self.first)
        return change / abs(self.first)

    def _described(self, value: float) -> str:
        return f"{value:.4f}" if self.window == 1 else f"{value:.4f}, mean of the last {self.window}"

    def update(self, epoch: int, signals: EpochSignals) -> Optional[str]:
        """Feed the signals of ``epoch`` (just ended); the line to log when the point is found."""
        if self.fired_epoch is not None:
            return None
        value = self.value(signals)
        if value is None:  # not measured this epoch (e.g. retrieval every --val-frequency epochs)
            return None
        if self.first is None:
            self.first = value
        self.recent = (self.recent + [value])[-self.window :]
        smoothed = sum(self.recent) / len(self.recent)
        # The loss compares consecutive measurements, so it keeps the last one while unarmed too.
        previous, self.previous = self.previous, (epoch, smoothed)
        if not self.armed:
            if self._gain(smoothed) <= self.min_gain:
                return None  # nothing learned yet: no peak, no slow-down can be the point
            self.armed = True
        name = SIGNAL_NAMES[self.signal]
        if self.signal == "loss":
            if previous is None or previous[1] <= 0:
                return None
            improvement = (previous[1] - smoothed) / previous[1]
            if improvement >= self.min_improvement:
                return None
            self.detected_epoch = self.fired_epoch = epoch
            return (
                f"early-learning point detected at epoch {epoch} ({name} {self._described(smoothed)}, "
                f"{100 * improvement:.2f}% better than epoch {previous[0]}'s {previous[1]:.4f}, "
                f"under the {100 * self.min_improvement:g}% threshold)"
            )
        if self.best is None or smoothed > self.best[1]:
            self.best, self.below = (epoch, smoothed), 0
            return None
        self.below += 1
        if self.below < self.patience:
            return None
        self.detected_epoch, self.fired_epoch = self.best[0], epoch
        return (
            f"early-learning point detected at epoch {self.best[0]} ({name} peaked at "
            f"{self._described(self.best[1])}; no higher in the {self.below} measurement(s) since, "
            f"now {smoothed:.4f})"
        )

    def state_dict(self) -> dict:
        return {
            "signal": self.signal,
            "recent": list(self.recent),
            "first": self.first,
            "armed": self.armed,
            "best": self.best,
            "previous": self.previous,
            "below": self.below,
            "detected_epoch": self.detected_epoch,
            "fired_epoch": self.fired_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["signal"] != self.signal:
            raise ValueError(f"saved early-learning state watches {state['signal']!r}, not {self.signal!r}")
        as_pair = lambda p: None if p is None else (int(p[0]), float(p[1]))  # noqa: E731
        self.best, self.previous = as_pair(state["best"]), as_pair(state["previous"])
        self.below, self.detected_epoch, self.fired_epoch = (
            int(state["below"]),
            state["detected_epoch"],
            state["fired_epoch"],
        )
        # A state saved before the arming rule: it was watching from the first measurement.
        self.recent = [float(v) for v in state.get("recent", [])][-self.window :]
        self.first = None if state.get("first") is None else float(state["first"])
        self.armed = bool(state.get("armed", self.best is not None or self.previous is not None))
