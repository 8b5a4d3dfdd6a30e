"""Per-sample loss weights for OpenCLIP's contrastive loss (InfoBatch's rescaling, SCAN's and
InfoBatch's variable per-rank batch sizes).

``LossWeights`` is the channel: ``SelectingLoader`` pushes the weights of each micro-batch
before upstream's ``train_one_epoch`` receives it; ``WeightedClipLoss`` reads the weights of
the features it is called with. With ``--accum-freq N`` upstream calls the loss on the
concatenated features of the last N micro-batches, so the channel keeps the last N pushes.
"""

from collections import deque

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss


class LossWeights:
    """The weights of the micro-batches upstream is training on."""

    def __init__(self, accum_freq: int = 1):
        self.window = deque(maxlen=accum_freq)

    def push(self, weights: torch.Tensor, candidates: int) -> None:
        """``weights`` [n] of the n samples trained on; the weighted loss is
        ``sum(weights * l) / candidates`` (``candidates``: the batch the samples stand for)."""
        self.window.append((weights, candidates))

    def current(self, count: int):
        """``(weights [count], candidates)`` of the last micro-batches holding ``count`` samples."""
        weights = torch.cat([w for w, _ in self.window]) if self.window else torch.empty(0)
        if len(weights) != count:
            raise RuntimeError(f"loss called on {count} samples, but the selection weighted {len(weights)}")
        return weights, sum(c for _, c in self.window)


class WeightedClipLoss(ClipLoss):
    """``open_clip.loss.ClipLoss`` (open_clip_torch 3.3.0) with a weight per sample.

    Logits and labels are upstream's (``get_logits``/``get_ground_truth``, so local loss,
    gather-with-grad and the multi-rank gather are unchanged); the two cross-entropies are
    taken per sample and combined as ``sum_i w_i (ce_row_i + ce_col_i) / 2 / candidates``.
    With every weight 1 and nothing dropped this is exactly ``ClipLoss``. Without
    ``--local-loss`` every rank computes the loss of the global batch, so the weights and
    candidate counts are gathered too.
    """

    def __init__(self, weights: LossWeights, **clip_loss_options):
        super().__init__(**clip_loss_options)
        self.weights = weights

    @classmethod
    def like(cls, loss: ClipLoss, weights: LossWeights) -> "WeightedClipLoss":
        return cls(
            weights,
            local_loss=loss.local_loss,
            gather_with_grad=loss.gather_with_grad,
            cache_labels=loss.cache_labels,
            rank=loss.rank,
            world_size=loss.world_size,
            use_horovod=loss.use_horovod,
        )

    def _global(self, weights, candidates):
        if self.world_size == 1 or self.local_loss:
            return weights, candidates
        parts = [torch.empty_like(weights) for _ in range(self.world_size)]
        dist.all_gather(parts, weights.contiguous())
        total = torch.tensor([float(candidates)], device=weights.device)
        dist.all_reduce(total)
        return torch.cat(parts), float(total)

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, output_dict=False):
        logits_per_image, logits_per_text = self.get_logits(
            image_features, text_features, logit_scale, logit_bias=logit_bias
        )
        labels = self.get_ground_truth(image_features.device, logits_per_image.shape[0])
        weights, candidates = self.weights.current(len(image_features))
        weights, candidates = self._global(weights.to(image_features.device), candidates)
        per_sample = (
            F.cross_entropy(logits_per_image, labels, reduction="none")
            + F.cross_entropy(logits_per_text, labels, reduction="none")
        ) / 2
        total_loss = (weights.to(per_sample.dtype) * per_sample).sum() / candidates
        return {"contrastive_loss": total_loss} if output_dict else total_loss
