"""Strategies that rank the candidate batch by one score of the model being trained."""

import torch

from open_clip_dissect.core.strategies.base import Decision, Strategy, uniform
from open_clip_dissect.core.strategies.registry import register


@register
class RandomSelection(Strategy):
    name = "random"
    listing_order = 10
    summary = "a uniformly random k"
    needs_scores = False  # the draw reads only the batch size: no scoring pass unless records ask

    def rank(self, scores, history, epoch, generator):
        return uniform(len(scores.curr), generator, scores.curr.device)


@register
class Observe(Strategy):
    """Full-data training that still runs the scoring pass, so that ``--selection-record`` and
    the per-epoch signals show how every sample's CLIPScore evolves (the paper's Fig. 3)."""

    name = "observe"
    listing_order = 10
    summary = "train on every candidate (full data) but score and record them all"
    keeps_all = True

    def decide(self, scores, history, k, epoch, generator=None):
        # in batch order, so that training is exactly that of --selection none
        everything = torch.arange(len(scores.curr), device=scores.curr.device)
        return Decision(everything, torch.zeros_like(scores.curr), torch.full_like(scores.curr, float("nan")))


@register
class SmallLoss(Strategy):
    name = "small-loss"
    listing_order = 10
    summary = "the k smallest per-sample InfoNCE losses"
    needs_loss = True

    def rank(self, scores, history, epoch, generator):
        return -scores.loss


@register
class BigLoss(Strategy):
    name = "big-loss"
    listing_order = 10
    summary = "the k largest per-sample InfoNCE losses"
    needs_loss = True

    def rank(self, scores, history, epoch, generator):
        return scores.loss


@register
class SelfClipScore(Strategy):
    name = "clipscore"
    listing_order = 10
    summary = "the k highest CLIPScores of the model being trained"

    def rank(self, scores, history, epoch, generator):
        return scores.curr
