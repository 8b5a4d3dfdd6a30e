"""Strategies that need a frozen oracle (reference) model scored on the same batch."""

from open_clip_dissect.core.strategies.base import Strategy
from open_clip_dissect.core.strategies.registry import register


@register
class OracleClipScore(Strategy):
    """The k highest CLIPScores of a frozen oracle model (the paper's CLIPScore* row)."""

    name = "clipscore-oracle"
    listing_order = 60
    summary = "the k highest CLIPScores of a frozen --oracle-model"
    needs_oracle = True

    def rank(self, scores, history, epoch, generator):
        return scores.oracle


@register
class Learnability(Strategy):
    """RHO-LOSS / JEST-style learnability ``loss_learner - loss_reference``: the k highest.

    The reference is the frozen ``--oracle-*`` model, scored on the same candidate batch with
    its own logit scale. (JEST's joint sampling of sub-batches is not implemented: this is the
    per-sample score of RHO-LOSS and of JEST's "hard learnability".)
    """

    name = "learnability"
    listing_order = 60
    summary = "the k highest learner-minus-reference losses, the reference being --oracle-model (RHO-LOSS/JEST)"
    needs_loss = True
    needs_oracle = True

    def rank(self, scores, history, epoch, generator):
        return scores.loss - scores.oracle_loss
