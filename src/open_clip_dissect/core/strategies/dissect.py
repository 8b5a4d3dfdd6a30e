"""DISSect (Differential-Informed Sample Selection): keep the samples whose CLIPScore fell the
most below their history, ``delta = hist - curr``."""
import torch

from open_clip_dissect.core.strategies.base import Decision, Strategy, select_topk
from open_clip_dissect.core.strategies.registry import Option, at_least, in_range, register
from open_clip_dissect.core.strategies.simple import RandomSelection


@register
class DissectWarmup(Strategy):
    """Warm-up epochs: keep a random ``k`` and record each sample's CLIPScore (the last
    warm-up visit wins). Afterwards: ``delta = (W - mean_batch W) - (curr - mean_batch curr)``.

    A sample with no warm-up score gets ``delta = 0`` (means taken over the samples that have
    one) and its current score is recorded as its W at that first visit.
    """
    name = "dissect-warmup"
    summary = "DISSect: hist - curr against the CLIPScore of a warm-up epoch"
    needs_history = True

    options = (Option("warmup_epochs", "--dissect-warmup-epochs", int, 5,
                      "epochs of random selection that record each sample's CLIPScore as its history",
                      at_least(0)),)

    def __init__(self, warmup_epochs: int = 5):
        self.warmup_epochs = warmup_epochs

    def decide(self, scores, history, k, epoch, generator=None):
        curr = scores.curr
        if epoch < self.warmup_epochs:
            rank = RandomSelection().rank(scores, history, epoch, generator)
            hist = torch.where(history.seen, history.score, torch.full_like(curr, float("nan")))
            return Decision(select_topk(rank, k, generator), rank, hist, curr)
        seen = history.seen
        n_seen = seen.sum().clamp_min(1)
        mean_w = (history.score * seen).sum() / n_seen
        mean_c = (curr * seen).sum() / n_seen
        delta = torch.where(seen, (history.score - mean_w) - (curr - mean_c), torch.zeros_like(curr))
        hist = torch.where(seen, history.score, torch.full_like(curr, float("nan")))
        return Decision(select_topk(delta, k, generator), delta, hist, curr, store_mask=~seen)


@register
class DissectMomentum(Strategy):
    """``delta = hist - curr``; keep the largest; then ``hist <- beta*hist + (1-beta)*curr``.

    A first visit starts from ``hist = curr`` (``delta = 0``), so unseen samples rank in the
    middle and among themselves in random order (the tie-break of ``select_topk``).
    """
    name = "dissect-mome"
    summary = "DISSect: hist - curr against a momentum average of past CLIPScores"
    needs_history = True

    options = (Option("momentum", "--dissect-momentum", float, 0.9,
                      "beta in hist <- beta * hist + (1 - beta) * curr, in [0, 1)",
                      in_range(0.0, 1.0, high_open=True)),)

    def __init__(self, momentum: float = 0.9):
        self.momentum = momentum

    def decide(self, scores, history, k, epoch, generator=None):
        hist = torch.where(history.seen, history.score, scores.curr)
        delta = hist - scores.curr
        new = self.momentum * hist + (1.0 - self.momentum) * scores.curr
        return Decision(select_topk(delta, k, generator), delta, hist, new)
