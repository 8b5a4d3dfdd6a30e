"""What every strategy shares: the per-sample scores of a candidate batch, the history rows,
the decision, the ``Strategy`` base class and the tie-breaking top-k.

Conventions: ``curr`` is the CLIPScore ``w * max(cos, 0)`` of the model being trained; every
ranking score is "higher = keep"; ties are broken by a random permutation (never index order).
"""

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F

from open_clip_dissect.core.early_learning import EpochSignals
from open_clip_dissect.core.transfer import to_device


def clipscore(image_features: torch.Tensor, text_features: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """``scale * max(cos(image_i, text_i), 0)`` per pair."""
    cos = (F.normalize(image_features.float(), dim=-1) * F.normalize(text_features.float(), dim=-1)).sum(-1)
    return scale * cos.clamp_min(0)


def infonce_directions(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """[B, 2]: each pair's image->text cross-entropy (its row of the batch's logits) and
    text->image cross-entropy (its column)."""
    logits = (
        logit_scale.float() * F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T
    )
    labels = torch.arange(len(logits), device=logits.device)
    rows = F.cross_entropy(logits, labels, reduction="none")
    cols = F.cross_entropy(logits.T, labels, reduction="none")
    return torch.stack([rows, cols], dim=1)


def per_sample_infonce(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE of each pair within the batch: the mean of its two directions."""
    return infonce_directions(image_features, text_features, logit_scale).mean(1)


def contrastive_gradient(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """[B, 2d]: the gradient of each pair's symmetric InfoNCE ``l_i`` with respect to its own
    normalised embeddings ``(u_i, v_i)``, in closed form (no autograd).

    With ``s`` the logit scale, ``P`` the row softmax and ``Q`` the column softmax of
    ``s U V^T``: ``dl_i/du_i = s/2 (sum_j P_ij v_j - v_i + (Q_ii - 1) v_i)`` and
    ``dl_i/dv_i = s/2 (sum_j Q_ji u_j - u_i + (P_ii - 1) u_i)``. This is the contrastive
    counterpart of DivBS's last-layer gradient (the gradient at the model's output layer).
    O(B^2 d).
    """
    u = F.normalize(image_features.float(), dim=-1)
    v = F.normalize(text_features.float(), dim=-1)
    s = logit_scale.float()
    logits = s * u @ v.T
    p = logits.softmax(dim=1)
    q = logits.softmax(dim=0)
    grad_u = p @ v - v + (q.diagonal() - 1)[:, None] * v
    grad_v = q.T @ u - u + (p.diagonal() - 1)[:, None] * u
    return torch.cat([grad_u, grad_v], dim=1) * (s / 2)


def num_kept(batch_size: int, ratio: float) -> int:
    """``k = max(1, round(ratio * B))``."""
    return max(1, min(batch_size, round(ratio * batch_size)))


def uniform(n: int, generator: Optional[torch.Generator], device) -> torch.Tensor:
    """``n`` uniform draws from the (CPU) generator, on ``device``: the same draws on CPU and CUDA.
    The copy to the GPU does not wait for it (``transfer.to_device``)."""
    return to_device(torch.rand(n, generator=generator, device="cpu"), device)


def select_topk(score: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Indices of the ``k`` highest scores; equal scores are ordered by a random permutation."""
    perm = to_device(torch.randperm(len(score), generator=generator, device="cpu"), score.device)
    order = torch.argsort(score[perm], descending=True, stable=True)
    return perm[order[:k]]


def batch_ranks(values: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """0-based ascending rank of each value in the batch; equal values in random order."""
    n = len(values)
    ranks = torch.empty(n, dtype=torch.long, device=values.device)
    ranks[select_topk(values, n, generator)] = torch.arange(n - 1, -1, -1, device=values.device)
    return ranks


@dataclass
class BatchScores:
    """What the no-grad scoring pass measured for one candidate batch of ``B`` samples."""

    curr: torch.Tensor  # [B] CLIPScore of the current model
    loss: Optional[torch.Tensor] = None  # [B] per-sample symmetric InfoNCE
    loss_directions: Optional[torch.Tensor] = None  # [B, 2] image->text, text->image InfoNCE
    oracle: Optional[torch.Tensor] = None  # [B] CLIPScore of a frozen oracle model
    oracle_loss: Optional[torch.Tensor] = None  # [B] symmetric InfoNCE of the oracle model
    gradient: Optional[torch.Tensor] = None  # [B, 2d] ``contrastive_gradient``

    @classmethod
    def from_features(cls, image_features, text_features, logit_scale=None, scale=100.0, gradient=False):
        """CLIPScore always; the losses when ``logit_scale`` is given; the gradient proxy on request."""
        scores = cls(clipscore(image_features, text_features, scale))
        if logit_scale is not None:
            scores.loss_directions = infonce_directions(image_features, text_features, logit_scale)
            scores.loss = scores.loss_directions.mean(1)
            if gradient:
                scores.gradient = contrastive_gradient(image_features, text_features, logit_scale)
        return scores

    def fields(self) -> dict:
        """The measured fields (``None`` ones left out), e.g. to gather them across ranks."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if getattr(self, f) is not None}


@dataclass
class History:
    """Per-sample history for the candidate batch, as read from the history store."""

    score: torch.Tensor  # [B] stored score (meaning depends on the strategy); 0 where unseen
    seen: torch.Tensor  # [B] bool, the key has a stored score


@dataclass
class Decision:
    kept: torch.Tensor  # [k] indices into the batch
    rank: torch.Tensor  # [B] the ranking score ("delta" in records)
    hist: torch.Tensor  # [B] history used for the decision (NaN if none)
    new_history: Optional[torch.Tensor] = None  # [B] score to store; None: store nothing
    store_mask: Optional[torch.Tensor] = None  # [B] bool, which rows of new_history to store
    # [k] loss weight of each kept sample: the trained loss is sum(weights * l) / B over the
    # kept samples, B the candidate batch size. None: the plain mean over the kept samples.
    weights: Optional[torch.Tensor] = None


class Strategy:
    """Base class: rank the batch, keep the top ``k``.

    A strategy that reads the history (``needs_history``) overrides ``decide`` and returns the
    scores to store in ``Decision.new_history`` (``registry.register`` refuses one that does not).

    Strategies with state beyond the history store get ``begin_epoch`` (with the mean of the
    stored scores over every key) and ``end_epoch`` (with the epoch's ``EpochSignals``: mean
    scoring-pass loss, CLIPScore mean and spread, held-out retrieval when measured) and save it
    through ``state_dict``. ``variable_kept`` ones ignore ``k``: they keep a random number of
    samples and may weight their losses (``Decision.weights``). ``keeps_all`` ones train on every
    candidate (``k`` is the whole batch whatever the ratio).
    """

    name = "base"
    summary = ""  # one line for --selection's help
    options = ()  # the ``Option``s the constructor takes (see ``registry``)
    needs_history = False
    needs_loss = False
    needs_oracle = False
    needs_gradient = False
    needs_history_mean = False  # begin_epoch gets the mean stored score
    needs_validation_retrieval = False  # end_epoch reads held-out R@sum (Selector.set_retrieval)
    variable_kept = False
    keeps_all = False
    listing_order = 100  # place among --selection's choices (built-ins 10-60; ties: import order)

    def begin_epoch(self, epoch: int, history_mean: Optional[float] = None) -> None:
        pass

    def unused_options(self) -> List[str]:
        """Names of this instance's options that its configuration ignores (e.g. the ``auto``
        detector's options with a fixed warm-up); a flag given for one of them gets a warning."""
        return []

    def end_epoch(self, epoch: int, signals: EpochSignals) -> Optional[str]:
        """After ``epoch``; may return one line for the run's log (an event such as a detected
        early-learning point)."""
        return None

    def status(self) -> dict:
        """Scalars for the per-epoch selection log (``selection.jsonl``), e.g. the warm-up phase."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def rank(
        self, scores: BatchScores, history: Optional[History], epoch: int, generator: Optional[torch.Generator]
    ) -> torch.Tensor:
        raise NotImplementedError

    def decide(
        self,
        scores: BatchScores,
        history: Optional[History],
        k: int,
        epoch: int,
        generator: Optional[torch.Generator] = None,
    ) -> Decision:
        rank = self.rank(scores, history, epoch, generator)
        nan = torch.full_like(scores.curr, float("nan"))
        return Decision(select_topk(rank, k, generator), rank, nan)


def keep_at_least_one(drop: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """``drop`` with the sample of the highest draw spared when every sample would be dropped
    (a contrastive step needs a batch); no host sync."""
    spare = torch.zeros_like(drop)
    spare[draws.argmax().reshape(1)] = True  # a 1-d index: a 0-d one is read on the host
    return drop & ~(drop.all() & spare)
