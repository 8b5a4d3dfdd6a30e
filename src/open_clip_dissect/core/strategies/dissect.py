"""DISSect (Differential-Informed Sample Selection): keep the samples whose CLIPScore fell the
most below their history, ``delta = hist - curr``.

Both variants start with a warm-up of random selection, of a fixed number of epochs or ``auto``:
until an ``EarlyLearningDetector`` finds the early-learning point on the run's own signals
(before that point ``delta`` ranks the clean pairs last, see ``core.early_learning``).
"""

from typing import Optional

import torch

from open_clip_dissect.core.early_learning import (
    DEFAULT_MIN_GAIN,
    DEFAULT_MIN_IMPROVEMENT,
    DEFAULT_PATIENCE,
    DEFAULT_SIGNAL,
    DEFAULT_WINDOW,
    SIGNALS,
    EarlyLearningDetector,
)
from open_clip_dissect.core.strategies.base import Decision, Strategy, select_topk, uniform
from open_clip_dissect.core.strategies.registry import Option, at_least, in_range, one_of, register

AUTO = "auto"


def epochs_or_auto(text):
    """A number of epochs >= 0, or ``auto`` (the command-line type of the warm-up flags)."""
    if isinstance(text, str) and text.strip().lower() == AUTO:
        return AUTO
    return int(text)


def _check_epochs_or_auto(value):
    if value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    return "must be a number of epochs >= 0 or 'auto'"


# Shared by both variants (same flags): how ``auto`` finds the early-learning point.
AUTO_OPTIONS = (
    Option(
        "auto_signal",
        "--dissect-auto-signal",
        str,
        DEFAULT_SIGNAL,
        "with a warm-up of 'auto', the signal that ends it: 'retrieval' (the R@sum of "
        "--val-data, a held-out split, has passed its peak; never a reported split), or the "
        "label-free 'loss' (the mean scoring-pass loss improves by less than "
        "--dissect-auto-min-improvement) or 'spread' (the standard deviation of the epoch's "
        "CLIPScores has passed its peak)",
        one_of(SIGNALS),
    ),
    Option(
        "auto_patience",
        "--dissect-auto-patience",
        int,
        DEFAULT_PATIENCE,
        "retrieval and spread signals: measurements below the peak before the peak counts as passed",
        at_least(1),
    ),
    Option(
        "auto_min_improvement",
        "--dissect-auto-min-improvement",
        float,
        DEFAULT_MIN_IMPROVEMENT,
        "loss signal: the relative epoch-over-epoch improvement under which learning has slowed down",
        in_range(0.0, 1.0),
    ),
    Option(
        "auto_window",
        "--dissect-auto-window",
        int,
        DEFAULT_WINDOW,
        "every signal: measurements averaged (the trailing mean) before they are compared, so that one "
        "epoch's swing neither makes nor breaks a peak",
        at_least(1),
    ),
    Option(
        "auto_min_gain",
        "--dissect-auto-min-gain",
        float,
        DEFAULT_MIN_GAIN,
        "every signal: the detector starts watching only once the averaged signal is better than the "
        "first measurement by more than this fraction (an early-learning point cannot come before "
        "the model has learned anything, so a dip at the start is not a peak)",
        at_least(0.0),
    ),
)


class WarmupGate:
    """A warm-up of ``warmup_epochs`` epochs, or until the early-learning point (``auto``)."""

    def __init__(
        self,
        warmup_epochs,
        auto_signal=DEFAULT_SIGNAL,
        auto_patience=DEFAULT_PATIENCE,
        auto_min_improvement=DEFAULT_MIN_IMPROVEMENT,
        auto_window=DEFAULT_WINDOW,
        auto_min_gain=DEFAULT_MIN_GAIN,
    ):
        self.warmup_epochs = warmup_epochs
        self.detector = (
            EarlyLearningDetector(auto_signal, auto_patience, auto_min_improvement, auto_window, auto_min_gain)
            if warmup_epochs == AUTO
            else None
        )

    @property
    def reads_loss(self) -> bool:
        return self.detector is not None and self.detector.signal == "loss"

    @property
    def reads_retrieval(self) -> bool:
        return self.detector is not None and self.detector.signal == "retrieval"

    def first_selection_epoch(self) -> Optional[int]:
        """The first epoch of ``delta`` selection (None: ``auto`` has not found it yet)."""
        return self.warmup_epochs if self.detector is None else self.detector.switch_epoch

    def in_warmup(self, epoch: int) -> bool:
        first = self.first_selection_epoch()
        return first is None or epoch < first

    def end_epoch(self, epoch, signals) -> Optional[str]:
        if self.detector is None:
            return None
        line = self.detector.update(epoch, signals)
        return None if line is None else f"{line}; selection by delta from epoch {epoch + 1}"

    def status(self) -> dict:
        first = self.first_selection_epoch()
        out = {} if first is None else {"selection_from_epoch": first}
        if self.detector is not None and self.detector.detected_epoch is not None:
            out["early_learning_point"] = self.detector.detected_epoch
        return out

    def state_dict(self) -> dict:
        return {} if self.detector is None else {"early_learning": self.detector.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.detector is not None and "early_learning" in state:
            self.detector.load_state_dict(state["early_learning"])


class _Gated(Strategy):
    """A strategy behind a ``WarmupGate`` (set as ``self.gate``)."""

    gate: WarmupGate

    def _gate(self, gate: WarmupGate) -> None:
        self.gate = gate
        self.needs_loss = gate.reads_loss  # the loss signal needs the scoring pass's losses
        self.needs_validation_retrieval = gate.reads_retrieval

    def end_epoch(self, epoch, signals):
        return self.gate.end_epoch(epoch, signals)

    def unused_options(self):
        """The detector's options do nothing with a fixed warm-up."""
        return [] if self.gate.detector is not None else [o.name for o in AUTO_OPTIONS]

    def status(self):
        return self.gate.status()

    def state_dict(self):
        return self.gate.state_dict()

    def load_state_dict(self, state):
        self.gate.load_state_dict(state)


@register
class DissectWarmup(_Gated):
    """Warm-up epochs: keep a random ``k`` and record each sample's CLIPScore (the last
    warm-up visit wins). Afterwards: ``delta = (W - mean_batch W) - (curr - mean_batch curr)``.

    A sample with no warm-up score gets ``delta = 0`` (means taken over the samples that have
    one) and its current score is recorded as its W at that first visit.
    """

    name = "dissect-warmup"
    listing_order = 20
    summary = "DISSect: hist - curr against the CLIPScore of a warm-up epoch"
    needs_history = True

    options = (
        Option(
            "warmup_epochs",
            "--dissect-warmup-epochs",
            epochs_or_auto,
            5,
            "epochs of random selection that record each sample's CLIPScore as its "
            "history, or 'auto': until the early-learning point (see --dissect-auto-signal)",
            _check_epochs_or_auto,
        ),
    ) + AUTO_OPTIONS

    def __init__(
        self,
        warmup_epochs=5,
        auto_signal=DEFAULT_SIGNAL,
        auto_patience=DEFAULT_PATIENCE,
        auto_min_improvement=DEFAULT_MIN_IMPROVEMENT,
        auto_window=DEFAULT_WINDOW,
        auto_min_gain=DEFAULT_MIN_GAIN,
    ):
        self._gate(
            WarmupGate(warmup_epochs, auto_signal, auto_patience, auto_min_improvement, auto_window, auto_min_gain)
        )

    def decide(self, scores, history, k, epoch, generator=None):
        curr = scores.curr
        hist = torch.where(history.seen, history.score, torch.full_like(curr, float("nan")))
        if self.gate.in_warmup(epoch):
            rank = uniform(len(curr), generator, curr.device)
            return Decision(select_topk(rank, k, generator), rank, hist, curr)
        seen = history.seen
        n_seen = seen.sum().clamp_min(1)
        mean_w = (history.score * seen).sum() / n_seen
        mean_c = (curr * seen).sum() / n_seen
        delta = torch.where(seen, (history.score - mean_w) - (curr - mean_c), torch.zeros_like(curr))
        return Decision(select_topk(delta, k, generator), delta, hist, curr, store_mask=~seen)


@register
class DissectMomentum(_Gated):
    """``delta = hist - curr``; keep the largest; then ``hist <- beta*hist + (1-beta)*curr``.

    A first visit starts from ``hist = curr`` (``delta = 0``), so unseen samples rank in the
    middle and among themselves in random order (the tie-break of ``select_topk``). With a
    warm-up (``--dissect-mome-warmup-epochs``), a random ``k`` is kept until it ends while the
    moving average accumulates from the first epoch; the records then show ``delta`` as it
    would rank, so the audit's AUROC tracks when it turns.
    """

    name = "dissect-mome"
    listing_order = 20
    summary = "DISSect: hist - curr against a momentum average of past CLIPScores"
    needs_history = True

    options = (
        Option(
            "momentum",
            "--dissect-momentum",
            float,
            0.9,
            "beta in hist <- beta * hist + (1 - beta) * curr, in [0, 1)",
            in_range(0.0, 1.0, high_open=True),
        ),
        Option(
            "warmup_epochs",
            "--dissect-mome-warmup-epochs",
            epochs_or_auto,
            0,
            "epochs of random selection before selecting by delta (the moving average "
            "accumulates from the first epoch), or 'auto': until the early-learning point "
            "(see --dissect-auto-signal)",
            _check_epochs_or_auto,
        ),
    ) + AUTO_OPTIONS

    def __init__(
        self,
        momentum: float = 0.9,
        warmup_epochs=0,
        auto_signal=DEFAULT_SIGNAL,
        auto_patience=DEFAULT_PATIENCE,
        auto_min_improvement=DEFAULT_MIN_IMPROVEMENT,
        auto_window=DEFAULT_WINDOW,
        auto_min_gain=DEFAULT_MIN_GAIN,
    ):
        self.momentum = momentum
        self._gate(
            WarmupGate(warmup_epochs, auto_signal, auto_patience, auto_min_improvement, auto_window, auto_min_gain)
        )

    def decide(self, scores, history, k, epoch, generator=None):
        hist = torch.where(history.seen, history.score, scores.curr)
        delta = hist - scores.curr
        new = self.momentum * hist + (1.0 - self.momentum) * scores.curr
        if self.gate.in_warmup(epoch):
            kept = select_topk(uniform(len(delta), generator, delta.device), k, generator)
        else:
            kept = select_topk(delta, k, generator)
        return Decision(kept, delta, hist, new)
