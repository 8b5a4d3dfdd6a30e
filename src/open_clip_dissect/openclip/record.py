"""``--selection-record DIR``: one parquet file per epoch and a PNG of the score distributions."""
import glob
import os
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from open_clip_dissect.atomic import atomic_output

COLUMNS = ["key", "epoch", "curr", "hist", "delta", "kept", "noisy"]


def write_epoch(directory: str, epoch: int, keys, columns: dict) -> str:
    """Write ``DIR/epoch_<n>.parquet`` atomically; ``noisy`` is left out when nothing is known."""
    os.makedirs(directory, exist_ok=True)
    frame = pd.DataFrame({
        "key": pd.Series(keys, dtype="string"),
        "epoch": np.full(len(keys), epoch, dtype=np.int32),
        "curr": columns["curr"].float().numpy(),
        "hist": columns["hist"].float().numpy(),
        "delta": columns["delta"].float().numpy(),
        "kept": columns["kept"].bool().numpy(),
    })
    noisy = columns["noisy"].numpy()
    if (noisy >= 0).any():
        frame["noisy"] = pd.array(np.where(noisy >= 0, noisy == 1, None), dtype="boolean")
    path = os.path.join(directory, f"epoch_{epoch}.parquet")
    with atomic_output(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def recorded_epochs(directory: str):
    found = []
    for path in glob.glob(os.path.join(directory, "epoch_*.parquet")):
        match = re.fullmatch(r"epoch_(\d+)\.parquet", os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def plot_distributions(directory: str, max_epochs: int = 6, max_rows: int = 200_000, seed: int = 0) -> str:
    """``DIR/distributions.png``: CLIPScore (top) and delta (bottom) histograms of clean vs noisy
    samples, for up to ``max_epochs`` epochs spread over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = recorded_epochs(directory)
    if not epochs:
        raise FileNotFoundError(f"no epoch_*.parquet in {directory}")
    chosen = [epochs[int(i)] for i in np.unique(np.linspace(0, len(epochs) - 1, max_epochs).round())]
    fig, axes = plt.subplots(2, len(chosen), figsize=(3.2 * len(chosen), 5.5), squeeze=False)
    rng = np.random.default_rng(seed)
    for col, (epoch, path) in enumerate(chosen):
        present = pq.read_schema(path).names
        frame = pd.read_parquet(path, columns=[c for c in ("curr", "delta", "noisy") if c in present])
        if len(frame) > max_rows:
            frame = frame.iloc[rng.choice(len(frame), max_rows, replace=False)]
        groups = [("all", frame)] if "noisy" not in frame else [
            ("clean", frame[frame.noisy == False]), ("noisy", frame[frame.noisy == True])]  # noqa: E712
        for row, column in enumerate(("curr", "delta")):
            ax = axes[row][col]
            values = frame[column].dropna()
            bins = np.linspace(values.min(), values.max() + 1e-6, 40) if len(values) else 10
            for label, group in groups:
                ax.hist(group[column].dropna(), bins=bins, alpha=0.55, density=True, label=label)
            ax.set_title(f"epoch {epoch}: {'CLIPScore' if column == 'curr' else 'delta'}", fontsize=9)
            if col == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    out = os.path.join(directory, "distributions.png")
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return out
