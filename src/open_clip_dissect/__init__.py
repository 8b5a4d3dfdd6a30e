"""open_clip_dissect: online sample selection for OpenCLIP training.

Importing the package registers its tiny model configs with OpenCLIP's model registry
(so ``--model dissect-vit-tiny`` works) and does nothing else: the run-time patches of
``open_clip_train`` are applied only by ``python -m open_clip_dissect.main``.
"""
from pathlib import Path

__version__ = "0.1.0"

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_model_configs() -> None:
    """Add the package's model configs to OpenCLIP's registry (idempotent)."""
    import open_clip
    from open_clip import factory

    if MODEL_CONFIG_DIR not in factory._MODEL_CONFIG_PATHS:
        open_clip.add_model_config(MODEL_CONFIG_DIR)


register_model_configs()
