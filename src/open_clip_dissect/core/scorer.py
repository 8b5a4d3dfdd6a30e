"""``Scorer``: the no-grad scoring pass that measures a candidate batch before selection.

Any CLIP-like model works (``encode_image``, ``encode_text``, ``logit_scale``), OpenCLIP's or
your own. The pass runs in eval mode, so BatchNorm running statistics and dropout are untouched,
under the caller's autocast (the training precision), and restores the model's mode.
"""
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from open_clip_dissect.core.selector import OracleFeatures


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

    def __init__(self, model, oracle=None, autocast: Callable = nullcontext, logit_scale: bool = True):
        self.model, self.oracle, self.autocast, self.with_logit_scale = model, oracle, autocast, logit_scale

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, texts: torch.Tensor) -> Features:
        model = unwrap(self.model)
        was_training = model.training
        model.eval()  # no BatchNorm statistics update, no dropout
        try:
            with self.autocast():
                features = Features(model.encode_image(images, normalize=True),
                                    model.encode_text(texts, normalize=True),
                                    model.logit_scale.exp() if self.with_logit_scale else None)
                if self.oracle is not None:
                    features.oracle = OracleFeatures(
                        self.oracle.encode_image(images, normalize=True),
                        self.oracle.encode_text(texts, normalize=True),
                        self.oracle.logit_scale.exp() if self.with_logit_scale else None)
        finally:
            model.train(was_training)
        return features
