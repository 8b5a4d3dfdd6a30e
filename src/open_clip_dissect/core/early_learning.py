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
    ):
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
        self.signal, self.patience, self.min_improvement = signal, patience, min_improvement
        self.best = None  # (epoch, value): the running maximum (retrieval, spread)
        self.previous = None  # (epoch, value): the last value (loss)
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

    def update(self, epoch: int, signals: EpochSignals) -> Optional[str]:
        """Feed the signals of ``epoch`` (just ended); the line to log when the point is found."""
        if self.fired_epoch is not None:
            return None
        value = self.value(signals)
        if value is None:  # not measured this epoch (e.g. retrieval every --val-frequency epochs)
            return None
        name = SIGNAL_NAMES[self.signal]
        if self.signal == "loss":
            previous, self.previous = self.previous, (epoch, value)
            if previous is None or previous[1] <= 0:
                return None
            improvement = (previous[1] - value) / previous[1]
            if improvement >= self.min_improvement:
                return None
            self.detected_epoch = self.fired_epoch = epoch
            return (
                f"early-learning point detected at epoch {epoch} ({name} {value:.4f}, "
                f"{100 * improvement:.2f}% better than epoch {previous[0]}'s {previous[1]:.4f}, "
                f"under the {100 * self.min_improvement:g}% threshold)"
            )
        if self.best is None or value > self.best[1]:
            self.best, self.below = (epoch, value), 0
            return None
        self.below += 1
        if self.below < self.patience:
            return None
        self.detected_epoch, self.fired_epoch = self.best[0], epoch
        return (
            f"early-learning point detected at epoch {self.best[0]} ({name} peaked at "
            f"{self.best[1]:.4f}; no higher in the {self.below} measurement(s) since, now {value:.4f})"
        )

    def state_dict(self) -> dict:
        return {
            "signal": self.signal,
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
