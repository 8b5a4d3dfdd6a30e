"""A frozen OpenCLIP model from local weights (evaluation, embeddings, the online oracle).

Weights come only from a local file: nothing is downloaded."""
import os
from typing import Optional


def load_frozen_model(model_name: str, checkpoint: Optional[str], device="cpu", precision="fp32",
                      flag: str = "--checkpoint"):
    """``(model, preprocess_val, tokenizer)``; the model is in eval mode without gradients.
    ``checkpoint`` may be an OpenCLIP training checkpoint or a state dict; None keeps the
    random initialisation."""
    import open_clip

    if checkpoint and not os.path.isfile(checkpoint):
        raise SystemExit(f"{flag}: not found: {checkpoint}")
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, precision=precision, device=device, output_dict=True)
    if checkpoint:
        open_clip.load_checkpoint(model, checkpoint, weights_only=False)
    model.eval().requires_grad_(False)
    return model, preprocess, open_clip.get_tokenizer(model_name)
