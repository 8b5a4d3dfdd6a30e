"""InfoBatch: unbiased soft pruning of the samples whose last loss is below the mean."""

import math

import torch

from open_clip_dissect.core.strategies.base import Decision, Strategy, keep_at_least_one, uniform
from open_clip_dissect.core.strategies.registry import RUN_EPOCHS, Option, in_range, register


@register
class InfoBatch(Strategy):
    """InfoBatch's soft pruning (Qin et al., ICLR 2024) on the candidate batch.

    Score = the sample's last recorded loss. A sample whose score is below the mean score of
    every recorded sample (taken at the start of the epoch, over all ranks) is "well learned"
    and dropped with probability ``prune``; the surviving well-learned samples get loss weight
    ``1 / (1 - prune)``, so that the expected loss of the batch equals its full loss. Samples
    without a score (first visits) and samples at or above the mean are always kept. No pruning
    from epoch ``(1 - anneal) * epochs`` on. The scores recorded are the scoring pass's losses
    of the samples trained on (InfoBatch records the training loss of the trained samples).
    """

    name = "infobatch"
    listing_order = 30
    summary = "InfoBatch's soft pruning of below-mean-loss samples with loss rescaling"
    needs_history = True
    needs_loss = True
    needs_history_mean = True
    variable_kept = True

    options = (
        Option(
            "prune",
            "--infobatch-prune",
            float,
            0.5,
            "probability of dropping a sample whose last loss is below the mean; kept ones of "
            "those are weighted 1 / (1 - p), in [0, 1)",
            in_range(0.0, 1.0, high_open=True),
        ),
        Option(
            "anneal",
            "--infobatch-anneal",
            float,
            0.125,
            "final fraction of the epochs trained without pruning, in [0, 1]",
            in_range(0.0, 1.0),
        ),
        RUN_EPOCHS,
    )

    def __init__(self, prune: float = 0.5, anneal: float = 0.125, epochs: int = 1):
        self.prune, self.anneal, self.epochs = prune, anneal, max(1, epochs)
        self.threshold = float("-inf")  # nothing is well learned before a mean exists

    def prunes_in(self, epoch: int) -> bool:
        return epoch < (1.0 - self.anneal) * self.epochs

    def begin_epoch(self, epoch, history_mean=None):
        valid = history_mean is not None and math.isfinite(history_mean)
        self.threshold = history_mean if valid else float("-inf")

    def decide(self, scores, history, k, epoch, generator=None):
        loss = scores.loss
        draws = uniform(len(loss), generator, loss.device)
        well_learned = history.seen & (history.score < self.threshold)
        drop = well_learned & (draws < self.prune) if self.prunes_in(epoch) else torch.zeros_like(well_learned)
        drop = keep_at_least_one(drop, draws)
        kept_mask = ~drop
        kept = kept_mask.nonzero().squeeze(1)
        rescale = 1.0 / (1.0 - self.prune) if self.prunes_in(epoch) else 1.0
        weights = torch.where(well_learned, torch.full_like(loss, rescale), torch.ones_like(loss))[kept]
        hist = torch.where(history.seen, history.score, torch.full_like(loss, float("nan")))
        rank = torch.where(history.seen, history.score, loss)  # last recorded loss, else the current
        return Decision(kept, rank, hist, loss, store_mask=kept_mask, weights=weights)
