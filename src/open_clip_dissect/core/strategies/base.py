"""What every strategy shares: the per-sample scores of a candidate batch, the history rows,
the decision, the ``Strategy`` base class and the tie-breaking top-k.

Conventions: ``curr`` is the CLIPScore ``w * max(cos, 0)`` of the model being trained; every
ranking score is "higher = keep"; ties are broken by a random permutation (never index order).
"""

from typing import List, Optional

import torch

from open_clip_dissect.core.early_learning import EpochSignals
from open_clip_dissect.core.pair_scores import (  # noqa: F401 (re-exported for the strategies)
    clipscore,
    contrastive_gradient,
    infonce_directions,
    per_sample_infonce,
)
from open_clip_dissect.core.transfer import to_device
from open_clip_dissect.core.types import BatchScores, Decision, History  # noqa: F401 (re-exported)


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
    needs_scores = True  # False: decides without the scoring pass (see BatchScores.unmeasured)
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
