"""The types the core shares between its parts: what the scoring pass measured for a candidate
batch (``BatchScores``), the history rows read for it (``History``), a strategy's answer
(``Decision``), a frozen oracle's embeddings (``OracleFeatures``) and the communicator of a
single process (``SingleProcess``; ``distributed.Communicator`` has the same surface).

Nothing here imports the selector or a strategy, so ``distributed/`` and the strategies depend on
this module only."""

from dataclasses import dataclass
from typing import Optional

import torch

from open_clip_dissect.core.pair_scores import clipscore, contrastive_gradient, infonce_directions


@dataclass
class BatchScores:
    """What the no-grad scoring pass measured for one candidate batch of ``B`` samples."""

    curr: torch.Tensor  # [B] CLIPScore of the current model
    loss: Optional[torch.Tensor] = None  # [B] per-sample symmetric InfoNCE
    loss_directions: Optional[torch.Tensor] = None  # [B, 2] image->text, text->image InfoNCE
    oracle: Optional[torch.Tensor] = None  # [B] CLIPScore of a frozen oracle model
    oracle_loss: Optional[torch.Tensor] = None  # [B] symmetric InfoNCE of the oracle model
    gradient: Optional[torch.Tensor] = None  # [B, 2d] ``contrastive_gradient``
    measured: bool = True  # False: no scoring pass ran, ``curr`` is NaN (``unmeasured``)

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

    @classmethod
    def unmeasured(cls, n: int, device) -> "BatchScores":
        """The scores of a batch that no scoring pass measured, for a strategy that reads none
        (``Strategy.needs_scores`` False): NaN CLIPScores, which the NaN check then ignores."""
        return cls(torch.full((n,), float("nan"), device=device), measured=False)

    def fields(self) -> dict:
        """The tensor fields (``None`` ones left out; ``curr`` always, NaN when unmeasured), e.g.
        to gather them across ranks."""
        values = {f: getattr(self, f) for f in self.__dataclass_fields__}
        return {f: v for f, v in values.items() if torch.is_tensor(v)}


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


@dataclass
class OracleFeatures:
    """A frozen oracle's embeddings of the same candidate batch (``clipscore-oracle``,
    ``learnability``); ``logit_scale`` is needed by the strategies that read losses."""

    image: torch.Tensor
    text: torch.Tensor
    logit_scale: Optional[torch.Tensor] = None


class SingleProcess:
    """The communicator of one process: every reduction is the identity. ``distributed.Communicator``
    has the same surface for several processes."""

    rank = 0
    world_size = 1
    device = torch.device("cpu")  # where the collectives run

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``[world, *shape]``: the equal-shaped ``tensor`` of every rank, in rank order."""
        return tensor.unsqueeze(0)

    def all_gather_padded(self, values: torch.Tensor, size: int) -> torch.Tensor:
        """``[world, size]`` on the CPU: every rank's 1-d ``values`` zero-padded to ``size``."""
        padded = torch.zeros(size, dtype=values.dtype, device=self.device)
        padded[: len(values)] = values.to(self.device)
        return self.all_gather(padded).cpu()

    def all_gather_host(self, values: torch.Tensor) -> torch.Tensor:
        return values.cpu().unsqueeze(0)

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def all_reduce_max(self, value: int) -> int:
        return value

    def gather(self, tensor: torch.Tensor, root: int = 0) -> torch.Tensor:
        return tensor.unsqueeze(0)

    def scatter(self, parts: torch.Tensor, shape, dtype, device, root: int = 0) -> torch.Tensor:
        return parts[0]

    def broadcast_text(self, text: Optional[str], src: int) -> str:
        return text or ""
