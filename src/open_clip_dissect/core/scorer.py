"""``Scorer``: the no-grad scoring pass that measures a candidate batch before selection.

Any CLIP-like model works (``encode_image``, ``encode_text``, ``logit_scale``), OpenCLIP's or
your own. It runs under the caller's autocast (the training precision) and restores the model's
mode. ``mode="eval"`` (default) scores in eval mode: BatchNorm uses its running statistics and
dropout is off. ``mode="train"`` scores in train mode, as the DISSect authors' code does:
BatchNorm normalises with the candidate batch's own statistics; the running statistics are put
back afterwards, so the scoring pass never moves them.
"""

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from open_clip_dissect.core.types import OracleFeatures
from open_clip_dissect.errors import InputError

SCORING_MODES = ("eval", "train")


@dataclass
class Features:
    """What ``Selector.step`` takes after the keys: the batch's embeddings, the model's logit
    scale (None when not asked for) and the oracle's features (None without an oracle)."""

    image: torch.Tensor
    text: torch.Tensor
    logit_scale: Optional[torch.Tensor] = None
    oracle: Optional[OracleFeatures] = None


def unwrap(model):
    """The module inside DistributedDataParallel (its forward is not used here)."""
    return model.module if hasattr(model, "module") else model


class Scorer:
    """``scorer(images, texts) -> Features``. ``logit_scale``: also return the model's
    (exponentiated) logit scale; ``oracle``: a frozen model scored on the same batch."""

    def __init__(
        self, model, oracle=None, autocast: Callable = nullcontext, logit_scale: bool = True, mode: str = "eval"
    ):
        if mode not in SCORING_MODES:
            raise InputError("--selection-scoring-mode", f"must be one of {SCORING_MODES}, got {mode!r}")
        self.model, self.oracle, self.autocast, self.with_logit_scale = model, oracle, autocast, logit_scale
        self.mode = mode
        self._norm_buffers = None  # train mode: the BatchNorm buffers to put back after each pass

    def _batchnorm_buffers(self, model):
        if self._norm_buffers is None:
            self._norm_buffers = [
                b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase) for b in m.buffers()
            ]
        return self._norm_buffers

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, texts: torch.Tensor) -> Features:
        model = unwrap(self.model)
        was_training = model.training
        saved = None
        if self.mode == "train":
            model.train()  # batch statistics; the running ones are restored below
            saved = [b.clone() for b in self._batchnorm_buffers(model)]
        else:
            model.eval()  # running statistics, no dropout
        try:
            with self.autocast():
                features = Features(
                    model.encode_image(images, normalize=True),
                    model.encode_text(texts, normalize=True),
                    model.logit_scale.exp() if self.with_logit_scale else None,
                )
                if self.oracle is not None:
                    features.oracle = OracleFeatures(
                        self.oracle.encode_image(images, normalize=True),
                        self.oracle.encode_text(texts, normalize=True),
                        self.oracle.logit_scale.exp() if self.with_logit_scale else None,
                    )
        finally:
            if saved is not None:
                for buffer, value in zip(self._batchnorm_buffers(model), saved):
                    buffer.copy_(value)
            model.train(was_training)
        return features
