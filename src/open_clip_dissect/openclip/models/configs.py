"""The package's tiny model configs (``dissect-vit-tiny``, ``dissect-vit-micro``,
``dissect-rn-tiny``), registered with OpenCLIP's model registry by the entry points (never on
import)."""

from pathlib import Path

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
MODEL_NAMES = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))


def register_model_configs() -> None:
    """Add the configs to OpenCLIP's registry (idempotent; OpenCLIP's public API only)."""
    import open_clip

    if not set(MODEL_NAMES) <= set(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)
