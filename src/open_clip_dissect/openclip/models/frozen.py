"""A frozen OpenCLIP model from local weights (evaluation, embeddings, the online oracle).

Weights come only from a local file: nothing is downloaded. The file is read with
``torch.load(weights_only=True)`` (tensors and plain values, no code); a legacy checkpoint that
pickles Python objects loads only with ``allow_pickle=True`` (``--allow-pickle-checkpoints``).
"""

import logging
import os
import pickle
from typing import Optional

from open_clip_dissect.errors import InputError

log = logging.getLogger(__name__)
ALLOW_PICKLE_FLAG = "--allow-pickle-checkpoints"


def load_frozen_model(
    model_name: str,
    checkpoint: Optional[str],
    device="cpu",
    precision="fp32",
    flag: str = "--checkpoint",
    allow_pickle: bool = False,
):
    """``(model, preprocess_val, tokenizer)``; the model is in eval mode without gradients.
    ``checkpoint`` may be an OpenCLIP training checkpoint or a state dict; None keeps the
    random initialisation."""
    import open_clip

    if checkpoint and not os.path.isfile(checkpoint):
        raise InputError(flag, f"not found: {checkpoint}")
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, precision=precision, device=device, output_dict=True
    )
    if checkpoint:
        if allow_pickle:
            log.warning(
                f"{ALLOW_PICKLE_FLAG}: loading {checkpoint} with full unpickling; this runs any "
                f"code the file carries, so use it only for files you trust"
            )
        try:
            open_clip.load_checkpoint(model, checkpoint, weights_only=not allow_pickle)
        except pickle.UnpicklingError:
            raise InputError(
                checkpoint,
                f"refused ({flag}): the file holds pickled Python objects "
                f"beyond tensors and plain values, which could run code; if "
                f"you trust it, pass {ALLOW_PICKLE_FLAG}",
            ) from None
    model.eval().requires_grad_(False)
    return model, preprocess, open_clip.get_tokenizer(model_name)
