"""``--selection-record DIR``: one parquet file per rank and epoch and a PNG of the score
distributions (rank 0 draws it from every rank's files).

The plot is redrawn at every epoch end by rank 0 while the other ranks wait at the next
collective, so it reads only ``DIR/sample/``: each rank writes, next to its record, a uniform
random sample of ``ceil(PLOT_SAMPLE_ROWS / W)`` of its rows. The plot's cost is then that of
``PLOT_SAMPLE_ROWS`` rows an epoch, whatever the epoch's size (``scripts/plot_timing.py``)."""

import glob
import math
import os
import re
import textwrap
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from open_clip_dissect.atomic import atomic_output
from open_clip_dissect.errors import InputError

COLUMNS = ["key", "epoch", "curr", "hist", "delta", "kept", "noisy"]
PLOT_SAMPLE_ROWS = 50_000  # rows an epoch (all ranks together) that the plot draws
SAMPLE_DIR = "sample"


# ``epoch_<e>.rank<r>-of-<W>.parquet``; ``epoch_<e>.parquet`` (rank 0 of 1) is the single-file
# layout of earlier versions, still read. Temporary files (``.tmp-<pid>``) do not match.
RECORD_NAME = re.compile(r"epoch_(\d+)(?:\.rank(\d+)-of-(\d+))?\.parquet")


def record_path(directory: str, epoch: int, rank: int, world_size: int) -> str:
    return os.path.join(directory, f"epoch_{epoch}.rank{rank}-of-{world_size}.parquet")


def sample_path(directory: str, epoch: int, rank: int, world_size: int) -> str:
    """The plot's sample of a record file: same name, in ``DIR/sample/``."""
    return record_path(os.path.join(directory, SAMPLE_DIR), epoch, rank, world_size)


def write_epoch(directory: str, epoch: int, keys, columns: dict, rank: int = 0, world_size: int = 1) -> str:
    """Write this rank's decisions of ``epoch`` to ``record_path(...)`` atomically, and the plot's
    sample of them to ``sample_path(...)`` (first: a record file implies its sample); ``noisy`` is
    left out when none of them is known. Files of the same epoch from another number of ranks, or
    in the single-file layout (an earlier run into the same folder), are removed: an epoch's files
    are one run's."""
    os.makedirs(os.path.join(directory, SAMPLE_DIR), exist_ok=True)
    frame = pd.DataFrame(
        {
            "key": pd.Series(keys, dtype="string"),
            "epoch": np.full(len(keys), epoch, dtype=np.int32),
            "curr": columns["curr"].float().numpy(),
            "hist": columns["hist"].float().numpy(),
            "delta": columns["delta"].float().numpy(),
            "kept": columns["kept"].bool().numpy(),
        }
    )
    noisy = columns["noisy"].numpy()
    if (noisy >= 0).any():
        frame["noisy"] = pd.array(np.where(noisy >= 0, noisy == 1, None), dtype="boolean")
    rows = min(len(frame), math.ceil(PLOT_SAMPLE_ROWS / world_size))
    chosen = np.sort(np.random.default_rng((epoch, rank)).choice(len(frame), rows, replace=False))
    sample = sample_path(directory, epoch, rank, world_size)
    with atomic_output(sample) as tmp:
        frame.drop(columns=["key"]).iloc[chosen].to_parquet(tmp, index=False)
    path = record_path(directory, epoch, rank, world_size)
    with atomic_output(path) as tmp:
        frame.to_parquet(tmp, index=False)
    for folder, own in ((directory, path), (os.path.join(directory, SAMPLE_DIR), sample)):
        for other_epoch, other_rank, world, other in _record_files(folder):
            if other_epoch == epoch and (world != world_size or (other_rank == rank and other != own)):
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
            raise InputError(
                "--selection-record",
                f"epoch {epoch} in {directory} is incomplete or mixes runs: "
                f"{[os.path.basename(p) for _, _, p in files]}",
            )
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


def read_plot_sample(files: Sequence[str], rows: int = PLOT_SAMPLE_ROWS, seed: int = 0) -> pd.DataFrame:
    """About ``rows`` rows of one epoch for the plot: each rank's sample file; a record without
    one (written by an earlier version) is read in full and subsampled."""
    per_rank = math.ceil(rows / len(files))
    columns = ("curr", "delta", "noisy")
    frames = []
    for path in files:
        sample = os.path.join(os.path.dirname(path), SAMPLE_DIR, os.path.basename(path))
        if os.path.exists(sample):
            frames.append(read_epoch([sample], columns))
            continue
        frame = read_epoch([path], columns)
        if len(frame) > per_rank:
            frame = frame.iloc[np.random.default_rng(seed).choice(len(frame), per_rank, replace=False)]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


PANELS = {  # column: (panel title, x-axis label)
    "curr": ("CLIPScore", "CLIPScore (points)"),
    "delta": ("delta", "ranking score (DISSect: points)"),
}


PLOT_INTERVAL_SECONDS = 60.0


def plot_due(completed: int, epochs: int, seconds_since_last: float) -> bool:
    """Whether ``distributions.png`` is redrawn after epoch ``completed`` of ``epochs``: after the
    last, and after the others at most once a minute. Drawing takes about a second: every epoch
    of a real run is drawn; a run of short epochs is not slowed by its plot."""
    return completed >= epochs or seconds_since_last >= PLOT_INTERVAL_SECONDS


def plot_distributions(directory: str, max_epochs: int = 6, sample_rows: int = PLOT_SAMPLE_ROWS) -> str:
    """``DIR/distributions.png`` (``distributions_figure``), written atomically."""
    import matplotlib.pyplot as plt

    fig = distributions_figure(directory, max_epochs, sample_rows)
    out = os.path.join(directory, "distributions.png")
    try:
        with atomic_output(out) as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    return out


def distributions_figure(directory: str, max_epochs: int = 6, sample_rows: int = PLOT_SAMPLE_ROWS):
    """CLIPScore (top) and delta (bottom) histograms of clean vs noisy samples, for up to
    ``max_epochs`` epochs spread over the run, from each epoch's sample (``read_plot_sample``).
    A panel whose values are all equal (delta in a strategy's first epoch: no history yet) says
    so instead of drawing a spike."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = recorded_epochs(directory)
    if not epochs:
        raise InputError("--selection-record", f"no epoch_*.parquet in {directory}")
    chosen = [epochs[int(i)] for i in np.unique(np.linspace(0, len(epochs) - 1, max_epochs).round())]
    fig, axes = plt.subplots(2, len(chosen), figsize=(max(3.4 * len(chosen) + 0.6, 7.0), 6.4), squeeze=False)
    labelled = False
    legend = [False, False]  # per row: on its first drawn panel
    for col, (epoch, files) in enumerate(chosen):
        frame = read_plot_sample(files, sample_rows)
        groups = (
            [("all", frame)]
            if "noisy" not in frame
            else [("clean", frame[frame.noisy.eq(False)]), ("noisy", frame[frame.noisy.eq(True)])]
        )  # (eq: a missing label is neither)
        labelled = labelled or "noisy" in frame
        for row, column in enumerate(("curr", "delta")):
            ax = axes[row][col]
            title, xlabel = PANELS[column]
            values = frame[column].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            ax.set_title(f"epoch {epoch}: {title} (n = {len(frame):,})", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            if col == 0:
                ax.set_ylabel("density (1 / point)", fontsize=8)
            if len(values) == 0 or values.min() == values.max():
                # a histogram of one value is a spike whose height is 1 / bin width
                note = "no finite values" if len(values) == 0 else f"all {len(values):,} values = {values[0]:g}"
                ax.text(
                    0.5, 0.5, f"{note}\n(nothing to draw)", ha="center", va="center", fontsize=8, transform=ax.transAxes
                )
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            bins = np.linspace(values.min(), values.max(), 41)
            for label, group in groups:  # stairs: one artist per group (hist draws a patch per bin)
                counts, _ = np.histogram(group[column].dropna(), bins=bins, density=bool(len(group)))
                ax.stairs(counts, bins, fill=True, alpha=0.55, label=label)
            ax.tick_params(labelsize=7)
            if not legend[row]:
                ax.legend(fontsize=8)
                legend[row] = True
    split = "clean vs noisy samples" if labelled else "all samples (none labelled noisy or clean)"
    width, height = fig.get_size_inches()
    title = [
        f"Selection scores by epoch, {split}, a random sample of up to {sample_rows:,} decisions an epoch "
        f"({os.path.abspath(directory)})",
        "CLIPScore = w * max(cos, 0), w = --clipscore-scale; delta = the strategy's ranking score "
        "(DISSect: hist - curr)",
    ]
    lines = [part for line in title for part in textwrap.wrap(line, int(width * 12))]
    fig.suptitle("\n".join(lines), fontsize=10)
    # fixed margins: tight_layout measures every tick label and costs more than the drawing
    fig.subplots_adjust(
        left=0.75 / width,
        right=1 - 0.2 / width,
        bottom=0.13,
        top=1 - (0.5 + 0.2 * len(lines)) / height,
        hspace=0.62,
        wspace=0.28,
    )
    return fig
