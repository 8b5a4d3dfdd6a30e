"""SCAN: bootstrapped pruning of the ill-matched and the redundant pairs, in cycles."""

import math
from typing import Optional

import torch

from open_clip_dissect.core.strategies.base import Decision, Strategy, batch_ranks, keep_at_least_one, uniform
from open_clip_dissect.core.strategies.registry import Option, at_least, in_range, register


@register
class Scan(Strategy):
    """SCAN's dynamic bootstrapping pruning (Guo & Kankanhalli, arXiv 2411.09126), streamed.

    Our reading of the method:

    - Warm-up on full data until the epoch's mean loss improves by less than
      ``warmup_improvement`` (relative) over the previous epoch, or for ``warmup_epochs`` epochs
      when given.
    - Then cycles of ``1 + PRUNE_EPOCHS`` epochs. The first (preparation) epoch trains on every
      candidate and nominates, per direction (image->text and text->image InfoNCE), the
      ``nominate`` fraction with the highest loss (ill-matched) and the fraction with the lowest
      (redundant); a pair is nominated when both directions agree (highest in both, or lowest in
      both). The next epochs prune a random ``0.5 * (1 + cos(pi * (T - e) / T))`` of the
      nominated pairs, e = 1..T, T = 3: 0.25, 0.75, 1.0.
    - Deliberate difference: the fractions are taken within each candidate batch, not over the
      whole epoch, so that the model's progress during the preparation epoch does not nominate
      early batches as ill-matched and late ones as redundant; and it streams (one float a key).

    The history stores the nomination (1.0 nominated, 0.0 not) of the last preparation epoch.
    """

    name = "scan"
    listing_order = 40
    summary = "SCAN's bootstrapped pruning of the highest- and lowest-loss pairs"
    needs_history = True
    needs_loss = True
    variable_kept = True
    PRUNE_EPOCHS = 3

    options = (
        Option(
            "nominate",
            "--scan-nominate",
            float,
            0.3,
            "fraction of each candidate batch with the highest (and the lowest) loss that a "
            "preparation epoch nominates for pruning, in (0, 0.5]",
            in_range(0.0, 0.5, low_open=True),
        ),
        Option(
            "warmup_improvement",
            "--scan-warmup-improvement",
            float,
            0.3,
            "full-data warm-up lasts until an epoch's mean loss improves on the previous one by "
            "less than this relative amount",
            at_least(0.0),
        ),
        Option(
            "warmup_epochs",
            "--scan-warmup-epochs",
            int,
            None,
            "a fixed number of warm-up epochs instead of the loss criterion (None: the criterion)",
            at_least(0),
        ),
    )

    def __init__(self, nominate: float = 0.3, warmup_improvement: float = 0.3, warmup_epochs: Optional[int] = None):
        self.nominate_fraction, self.warmup_improvement = nominate, warmup_improvement
        self.cycle_start = warmup_epochs  # None: decided by the loss criterion
        self.last_loss = None

    def prune_fraction(self, epoch: int) -> Optional[float]:
        """None in warm-up; 0.0 in a preparation epoch; else the fraction of nominated pairs pruned."""
        if self.cycle_start is None or epoch < self.cycle_start:
            return None
        e = (epoch - self.cycle_start) % (1 + self.PRUNE_EPOCHS)
        t = self.PRUNE_EPOCHS
        return 0.0 if e == 0 else 0.5 * (1.0 + math.cos(math.pi * (t - e) / t))

    def end_epoch(self, epoch, signals):
        mean_loss = signals.mean_loss
        if self.cycle_start is not None or mean_loss is None:
            return None
        previous, self.last_loss = self.last_loss, mean_loss
        if previous is not None and previous > 0 and (previous - mean_loss) / previous < self.warmup_improvement:
            self.cycle_start = epoch + 1
            return f"scan: warm-up ends after epoch {epoch} (mean loss {mean_loss:.4f}, {previous:.4f} before)"
        return None

    def nominated(self, loss_directions: torch.Tensor, generator=None) -> torch.Tensor:
        """[B] bool: in the top ``nominate`` fraction of both directions, or in the bottom of both."""
        n = len(loss_directions)
        m = int(self.nominate_fraction * n)
        ranks = torch.stack([batch_ranks(loss_directions[:, d], generator) for d in range(2)], dim=1)
        return (ranks >= n - m).all(1) | (ranks < m).all(1)

    def decide(self, scores, history, k, epoch, generator=None):
        loss = scores.loss
        fraction = self.prune_fraction(epoch)
        everything = torch.arange(len(loss), device=loss.device)
        nan = torch.full_like(loss, float("nan"))
        if fraction is None:  # warm-up: full data, nothing stored
            return Decision(everything, torch.ones_like(loss), nan)
        if fraction == 0.0:  # preparation: full data, store the nomination
            nominated = self.nominated(scores.loss_directions, generator)
            return Decision(everything, torch.ones_like(loss), nan, nominated.float())
        nominated = history.seen & (history.score > 0.5)
        draws = uniform(len(loss), generator, loss.device)
        drop = keep_at_least_one(nominated & (draws < fraction), draws)
        rank = torch.where(nominated, torch.full_like(loss, 1.0 - fraction), torch.ones_like(loss))
        hist = torch.where(history.seen, history.score, torch.full_like(loss, float("nan")))
        return Decision((~drop).nonzero().squeeze(1), rank, hist)

    def state_dict(self):
        return {"cycle_start": self.cycle_start, "last_loss": self.last_loss}

    def load_state_dict(self, state):
        self.cycle_start, self.last_loss = state["cycle_start"], state["last_loss"]
