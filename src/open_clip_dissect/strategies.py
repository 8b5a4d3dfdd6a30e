"""Selection strategies: pure tensor code, no OpenCLIP, no argparse, no files.

A strategy turns per-sample measurements of one candidate batch (``BatchScores``) and, where it
needs one, the per-sample history into a ranking score; ``select_topk`` keeps the ``k`` highest.
Three lines plug it into any training loop::

    scores = BatchScores.from_features(image_features, text_features, logit_scale)
    decision = strategy.decide(scores, history, k, epoch, generator)
    train_on(batch[decision.kept])  # then store history.update(keys, decision.new_history)

Conventions: ``curr`` is the CLIPScore ``w * max(cos, 0)`` of the model being trained; every
ranking score is "higher = keep"; ties are broken by a random permutation (never index order).
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


def clipscore(image_features: torch.Tensor, text_features: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """``scale * max(cos(image_i, text_i), 0)`` per pair."""
    cos = (F.normalize(image_features.float(), dim=-1) * F.normalize(text_features.float(), dim=-1)).sum(-1)
    return scale * cos.clamp_min(0)


def per_sample_infonce(image_features: torch.Tensor, text_features: torch.Tensor,
                       logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of each pair within the batch: the mean of the image->text
    cross-entropy of its row and the text->image cross-entropy of its column."""
    logits = logit_scale.float() * F.normalize(image_features.float(), dim=-1) @ F.normalize(
        text_features.float(), dim=-1).T
    labels = torch.arange(len(logits), device=logits.device)
    rows = F.cross_entropy(logits, labels, reduction="none")
    cols = F.cross_entropy(logits.T, labels, reduction="none")
    return (rows + cols) / 2


def num_kept(batch_size: int, ratio: float) -> int:
    """``k = max(1, round(ratio * B))``."""
    return max(1, min(batch_size, round(ratio * batch_size)))


def select_topk(score: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Indices of the ``k`` highest scores; equal scores are ordered by a random permutation."""
    perm = torch.randperm(len(score), generator=generator, device="cpu").to(score.device)
    order = torch.argsort(score[perm], descending=True, stable=True)
    return perm[order[:k]]


@dataclass
class BatchScores:
    """What the no-grad scoring pass measured for one candidate batch of ``B`` samples."""
    curr: torch.Tensor                    # [B] CLIPScore of the current model
    loss: Optional[torch.Tensor] = None   # [B] per-sample symmetric InfoNCE
    oracle: Optional[torch.Tensor] = None  # [B] CLIPScore of a frozen oracle model

    @classmethod
    def from_features(cls, image_features, text_features, logit_scale=None, scale=100.0):
        loss = None if logit_scale is None else per_sample_infonce(image_features, text_features, logit_scale)
        return cls(clipscore(image_features, text_features, scale), loss)


@dataclass
class History:
    """Per-sample history for the candidate batch, as read from the history store."""
    score: torch.Tensor   # [B] stored score (meaning depends on the strategy); 0 where unseen
    seen: torch.Tensor    # [B] bool, the key has a stored score


@dataclass
class Decision:
    kept: torch.Tensor                         # [k] indices into the batch
    rank: torch.Tensor                         # [B] the ranking score ("delta" in records)
    hist: torch.Tensor                         # [B] history used for the decision (NaN if none)
    new_history: Optional[torch.Tensor] = None  # [B] score to store; None: store nothing
    store_mask: Optional[torch.Tensor] = None   # [B] bool, which rows of new_history to store


class Strategy:
    """Base class: rank the batch, keep the top ``k``."""
    name = "base"
    needs_history = False
    needs_loss = False
    needs_oracle = False

    def rank(self, scores: BatchScores, history: Optional[History], epoch: int,
             generator: Optional[torch.Generator]) -> torch.Tensor:
        raise NotImplementedError

    def decide(self, scores: BatchScores, history: Optional[History], k: int, epoch: int,
               generator: Optional[torch.Generator] = None) -> Decision:
        rank = self.rank(scores, history, epoch, generator)
        nan = torch.full_like(scores.curr, float("nan"))
        return Decision(select_topk(rank, k, generator), rank, nan)


class RandomSelection(Strategy):
    name = "random"

    def rank(self, scores, history, epoch, generator):
        return torch.rand(len(scores.curr), generator=generator, device="cpu").to(scores.curr.device)


class SmallLoss(Strategy):
    name = "small-loss"
    needs_loss = True

    def rank(self, scores, history, epoch, generator):
        return -scores.loss


class BigLoss(Strategy):
    name = "big-loss"
    needs_loss = True

    def rank(self, scores, history, epoch, generator):
        return scores.loss


class SelfClipScore(Strategy):
    name = "clipscore"

    def rank(self, scores, history, epoch, generator):
        return scores.curr


class OracleClipScore(Strategy):
    """The k highest CLIPScores of a frozen oracle model (the paper's CLIPScore* row)."""
    name = "clipscore-oracle"
    needs_oracle = True

    def rank(self, scores, history, epoch, generator):
        return scores.oracle


class DissectMomentum(Strategy):
    """``delta = hist - curr``; keep the largest; then ``hist <- beta*hist + (1-beta)*curr``.

    A first visit starts from ``hist = curr`` (``delta = 0``), so unseen samples rank in the
    middle and among themselves in random order (the tie-break of ``select_topk``).
    """
    name = "dissect-mome"
    needs_history = True

    def __init__(self, momentum: float = 0.9):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"--dissect-momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum

    def decide(self, scores, history, k, epoch, generator=None):
        hist = torch.where(history.seen, history.score, scores.curr)
        delta = hist - scores.curr
        new = self.momentum * hist + (1.0 - self.momentum) * scores.curr
        return Decision(select_topk(delta, k, generator), delta, hist, new)


class DissectWarmup(Strategy):
    """Warm-up epochs: keep a random ``k`` and record each sample's CLIPScore (the last
    warm-up visit wins). Afterwards: ``delta = (W - mean_batch W) - (curr - mean_batch curr)``.

    A sample with no warm-up score gets ``delta = 0`` (means taken over the samples that have
    one) and its current score is recorded as its W at that first visit.
    """
    name = "dissect-warmup"
    needs_history = True

    def __init__(self, warmup_epochs: int = 5):
        if warmup_epochs < 0:
            raise ValueError(f"--dissect-warmup-epochs must be >= 0, got {warmup_epochs}")
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


def make_strategy(name: str, momentum: float = 0.9, warmup_epochs: int = 5) -> Strategy:
    if name == "dissect-mome":
        return DissectMomentum(momentum)
    if name == "dissect-warmup":
        return DissectWarmup(warmup_epochs)
    simple = {cls.name: cls for cls in (RandomSelection, SmallLoss, BigLoss, SelfClipScore, OracleClipScore)}
    if name not in simple:
        raise ValueError(f"--selection: unknown strategy {name!r}; choose from {STRATEGIES + ORACLE_STRATEGIES}")
    return simple[name]()


STRATEGIES = ("random", "small-loss", "big-loss", "clipscore", "dissect-warmup", "dissect-mome")
ORACLE_STRATEGIES = ("clipscore-oracle",)  # need --oracle-model and --oracle-checkpoint
