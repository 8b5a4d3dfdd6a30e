"""``distributions.png`` at epoch end: rank 0 draws it from each rank's sample file, so its cost
does not grow with the epoch; the figure has a title, labelled axes, and no degenerate spikes."""

import os

import numpy as np
import pandas as pd
import pytest
import torch

from open_clip_dissect.openclip.training import selection_record as record_lib


def _columns(n, epoch, seed=0):
    g = torch.Generator().manual_seed(seed)
    curr = torch.rand(n, generator=g) * 40
    hist = curr if epoch == 0 else curr + torch.randn(n, generator=g)
    return {
        "curr": curr,
        "hist": hist,
        "delta": hist - curr,
        "kept": torch.rand(n, generator=g) < 0.5,
        "noisy": (torch.rand(n, generator=g) < 0.4).to(torch.int8),
    }


def _write(directory, rows, epochs=3, world=2):
    for epoch in range(epochs):
        for rank in range(world):
            keys = [f"k{rank}-{i}" for i in range(rows // world)]
            record_lib.write_epoch(directory, epoch, keys, _columns(len(keys), epoch, seed=rank), rank, world)


@pytest.fixture
def rows_read(monkeypatch):
    """Every (file name, rows) that the record module reads."""
    reads = []
    real = record_lib.read_epoch

    def counting(files, columns=None):
        frame = real(files, columns)
        reads.append((tuple(os.path.relpath(f, os.path.dirname(os.path.dirname(f))) for f in files), len(frame)))
        return frame

    monkeypatch.setattr(record_lib, "read_epoch", counting)
    return reads


def test_each_rank_writes_a_uniform_sample_of_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(record_lib, "PLOT_SAMPLE_ROWS", 300)
    directory = str(tmp_path)
    _write(directory, rows=2000, epochs=1, world=2)
    for rank in range(2):
        full = pd.read_parquet(record_lib.record_path(directory, 0, rank, 2))
        sample = pd.read_parquet(record_lib.sample_path(directory, 0, rank, 2))
        assert len(sample) == 150 and "key" not in sample  # ceil(300 / 2) of 1000 rows
        rows = full.reset_index().merge(sample, on=["curr", "delta", "hist", "kept", "noisy", "epoch"])
        assert len(rows) == 150 and rows["index"].is_unique  # every sampled row is a row of the record
        assert rows["index"].max() - rows["index"].min() > 800  # spread over the epoch, not its first rows
    # An epoch rewritten by another number of ranks keeps only the new samples.
    record_lib.write_epoch(directory, 0, ["a", "b"], _columns(2, 0))
    assert sorted(os.listdir(tmp_path / record_lib.SAMPLE_DIR)) == ["epoch_0.rank0-of-1.parquet"]
    assert [e for e, _ in record_lib.recorded_epochs(directory)] == [0]  # samples are not records


def test_the_plot_reads_a_fixed_number_of_rows_whatever_the_epoch_size(tmp_path, monkeypatch, rows_read):
    monkeypatch.setattr(record_lib, "PLOT_SAMPLE_ROWS", 200)
    read = {}
    for rows in (2_000, 20_000):
        directory = str(tmp_path / str(rows))
        _write(directory, rows)
        rows_read.clear()
        record_lib.plot_distributions(directory, sample_rows=200)
        assert os.path.exists(os.path.join(directory, "distributions.png"))
        assert all(name.startswith(record_lib.SAMPLE_DIR + os.sep) for files, _ in rows_read for name in files)
        read[rows] = sum(n for _, n in rows_read)
    assert read[2_000] == read[20_000] == 3 * 200  # three epochs, 200 rows each


def test_records_without_a_sample_are_still_plotted(tmp_path, rows_read):
    """Records written before the samples existed: read in full, then subsampled."""
    _write(str(tmp_path), rows=400, epochs=2)
    for name in os.listdir(tmp_path / record_lib.SAMPLE_DIR):
        os.remove(tmp_path / record_lib.SAMPLE_DIR / name)
    fig = record_lib.distributions_figure(str(tmp_path), sample_rows=100)
    assert [n for _, n in rows_read] == [200] * 4  # every rank's file, in full
    assert "n = 100" in fig.axes[0].get_title()


def test_the_figure_is_titled_and_labelled_and_skips_degenerate_panels(tmp_path):
    _write(str(tmp_path), rows=1000, epochs=2)
    fig = record_lib.distributions_figure(str(tmp_path))
    assert "clean vs noisy" in fig._suptitle.get_text()
    (curr0, curr1), (delta0, delta1) = np.array(fig.axes).reshape(2, 2)
    for ax in (curr0, curr1, delta0, delta1):
        assert ax.get_xlabel() and ax.get_title().startswith("epoch")
    assert "CLIPScore" in curr0.get_xlabel() and curr0.get_ylabel().startswith("density")
    # epoch 0: hist = curr, every delta is 0; a histogram would be one bar 1 / bin-width high
    assert not delta0.patches and not delta0.collections and not delta0.get_yticks().size
    assert any("all 1,000 values = 0" in t.get_text() for t in delta0.texts)
    assert len(delta1.patches) == 2 and len(curr0.patches) == 2  # clean and noisy, drawn
    assert curr0.get_legend() is not None and delta1.get_legend() is not None


def test_the_plot_is_redrawn_after_the_last_epoch_and_at_most_once_a_minute_before():
    every = record_lib.PLOT_INTERVAL_SECONDS
    assert record_lib.plot_due(3, 3, 0.0) and record_lib.plot_due(4, 3, 0.0)  # the last (or a resumed later) epoch
    assert not record_lib.plot_due(1, 3, every - 1)  # a short epoch: not yet
    assert record_lib.plot_due(1, 3, every)  # an epoch of a minute or more: every one
