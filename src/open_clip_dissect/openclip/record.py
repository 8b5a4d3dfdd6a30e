"""``--selection-record DIR``: one parquet file per rank and epoch and a PNG of the score
distributions (rank 0 draws it from every rank's files)."""
import glob
import os
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from open_clip_dissect.atomic import atomic_output
from open_clip_dissect.errors import InputError

COLUMNS = ["key", "epoch", "curr", "hist", "delta", "kept", "noisy"]


# ``epoch_<e>.rank<r>-of-<W>.parquet``; ``epoch_<e>.parquet`` (rank 0 of 1) is the single-file
# layout of earlier versions, still read. Temporary files (``.tmp-<pid>``) do not match.
RECORD_NAME = re.compile(r"epoch_(\d+)(?:\.rank(\d+)-of-(\d+))?\.parquet")


def record_path(directory: str, epoch: int, rank: int, world_size: int) -> str:
    return os.path.join(directory, f"epoch_{epoch}.rank{rank}-of-{world_size}.parquet")


def write_epoch(directory: str, epoch: int, keys, columns: dict, rank: int = 0, world_size: int = 1) -> str:
    """Write this rank's decisions of ``epoch`` to ``record_path(...)`` atomically; ``noisy`` is left
    out when none of them is known. Files of the same epoch from another number of ranks, or in the
    single-file layout (an earlier run into the same folder), are removed: an epoch's files are
    one run's."""
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
    path = record_path(directory, epoch, rank, world_size)
    with atomic_output(path) as tmp:
        frame.to_parquet(tmp, index=False)
    for other_epoch, other_rank, world, other in _record_files(directory):
        if other_epoch == epoch and (world != world_size or (other_rank == rank and other != path)):
            try:
                os.remove(other)
            except FileNotFoundError:  # another rank removed it first
                pass
    return path


def _record_files(directory: str) -> List[Tuple[int, int, int, str]]:
    """``(epoch, rank, world_size, path)`` of every record file in ``directory``, sorted."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(directory), "epoch_*.parquet")):
        match = RECORD_NAME.fullmatch(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), int(match.group(2) or 0), int(match.group(3) or 1), path))
    return sorted(found)


def recorded_epochs(directory: str) -> List[Tuple[int, List[str]]]:
    """``(epoch, files)`` per recorded epoch, sorted, ``files`` in rank order: every rank's file
    of that epoch. ``InputError`` when an epoch lacks a rank's file or mixes numbers of ranks."""
    by_epoch = {}
    for epoch, rank, world, path in _record_files(directory):
        by_epoch.setdefault(epoch, []).append((rank, world, path))
    out = []
    for epoch, files in sorted(by_epoch.items()):
        world = files[0][1]
        if [(r, w) for r, w, _ in files] != [(r, world) for r in range(world)]:
            raise InputError("--selection-record", f"epoch {epoch} in {directory} is incomplete or mixes runs: "
                                                   f"{[os.path.basename(p) for _, _, p in files]}")
        out.append((epoch, [p for _, _, p in files]))
    return out


def read_epoch(files: Sequence[str], columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The rows of every rank's file of one epoch (``columns`` that a file lacks, i.e. ``noisy``
    where none of that rank's samples was labelled, come out as missing values)."""
    frames = []
    for path in files:
        present = pq.read_schema(path).names
        frames.append(pd.read_parquet(path, columns=[c for c in (columns or present) if c in present]))
    return pd.concat(frames, ignore_index=True)


def plot_distributions(directory: str, max_epochs: int = 6, max_rows: int = 200_000, seed: int = 0) -> str:
    """``DIR/distributions.png``: CLIPScore (top) and delta (bottom) histograms of clean vs noisy
    samples, for up to ``max_epochs`` epochs spread over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = recorded_epochs(directory)
    if not epochs:
        raise InputError("--selection-record", f"no epoch_*.parquet in {directory}")
    chosen = [epochs[int(i)] for i in np.unique(np.linspace(0, len(epochs) - 1, max_epochs).round())]
    fig, axes = plt.subplots(2, len(chosen), figsize=(3.2 * len(chosen), 5.5), squeeze=False)
    rng = np.random.default_rng(seed)
    for col, (epoch, files) in enumerate(chosen):
        frame = read_epoch(files, ("curr", "delta", "noisy"))
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
