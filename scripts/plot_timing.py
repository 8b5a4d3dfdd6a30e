#!/usr/bin/env python
"""Epoch-end cost of ``--selection-record`` on rank 0: write synthetic record files of N rows an
epoch and time ``plot_distributions`` (what rank 0 runs at every epoch end while the other ranks
wait at the next collective).

    python scripts/plot_timing.py --rows 1000000 10000000    # about 2 minutes at 10M (writing)

Each size writes ``--epochs`` epochs (the plot draws up to six) from ``--world`` ranks through
``record.write_epoch``, as training does, then times the plot ``--repeats`` times: median wall
clock and median CPU time of this process (steadier on a loaded machine).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from open_clip_dissect.openclip.training import selection_record as record


def write_records(directory: str, rows: int, epochs: int, world: int, seed: int = 0) -> float:
    """Seconds spent in ``write_epoch`` (all ranks of all epochs together)."""
    rng = np.random.default_rng(seed)
    per_rank = rows // world
    spent = 0.0
    for epoch in range(epochs):
        for rank in range(world):
            start = rank * per_rank
            keys = [f"/data/cc3m/{i // 10000:05d}.tar/{i:09d}" for i in range(start, start + per_rank)]
            noisy = rng.random(per_rank) < 0.4
            curr = np.where(noisy, rng.normal(12, 4, per_rank), rng.normal(25 + epoch, 5, per_rank))
            hist = curr + rng.normal(0, 2, per_rank) if epoch else curr
            columns = {
                "curr": torch.from_numpy(curr.astype(np.float32)),
                "hist": torch.from_numpy(hist.astype(np.float32)),
                "delta": torch.from_numpy((curr - hist).astype(np.float32)),
                "kept": torch.from_numpy(rng.random(per_rank) < 0.5),
                "noisy": torch.from_numpy(noisy.astype(np.int8)),
            }
            started = time.perf_counter()
            record.write_epoch(directory, epoch, keys, columns, rank, world)
            spent += time.perf_counter() - started
    return spent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[1_000_000, 10_000_000],
        help="Records an epoch, one measurement each (default: 1000000 10000000).",
    )
    p.add_argument("--epochs", type=int, default=6, help="Recorded epochs (default: 6, all of them plotted).")
    p.add_argument("--world", type=int, default=8, help="Ranks writing one file each an epoch (default: 8).")
    p.add_argument("--repeats", type=int, default=3, help="Timed plots per size; the median is reported (default: 3).")
    p.add_argument("--dir", default=None, help="Working folder (default: a temporary one, removed).")
    args = p.parse_args(argv)
    print(f"{'rows/epoch':>12} {'epochs':>6} {'ranks':>5} {'write s/epoch':>13} {'plot s':>8} {'plot cpu s':>10}")
    for rows in args.rows:
        with tempfile.TemporaryDirectory(dir=args.dir) as directory:
            written = write_records(directory, rows, args.epochs, args.world)
            times, cpu = [], []
            for _ in range(args.repeats):
                started, cpu_started = time.perf_counter(), time.process_time()
                record.plot_distributions(directory)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
            size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
            print(
                f"{rows:>12} {args.epochs:>6} {args.world:>5} {written / args.epochs:>13.2f} "
                f"{statistics.median(times):>8.2f} {statistics.median(cpu):>10.2f}   ({size / 2**20:.0f} MiB on disk)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
