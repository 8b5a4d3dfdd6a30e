"""Atomic checkpoint writes and a ``--resume latest`` that skips incomplete checkpoints."""

import logging
import os
import shutil

import open_clip_train.main as upstream_main
import pytest
import torch
from conftest import TINY_TRAIN_FLAGS, run_module

from open_clip_dissect.openclip.launch.main import patched_open_clip_train
from open_clip_dissect.openclip.state import checkpoint_files
from open_clip_dissect.openclip.state.state_files import save_state, state_path

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast


def _checkpoint(path, epoch):
    torch.save({"epoch": epoch, "state_dict": {"w": torch.full((64,), float(epoch))}}, path)


def _with_state(path, epoch, world=2, ranks=None):
    _checkpoint(path, epoch)
    for rank in range(world) if ranks is None else ranks:
        save_state(state_path(str(path)), {"strategy": "dissect-mome", "epoch": epoch}, rank, world)


def _truncate(path, keep=0.5):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def _latest(folder):
    return checkpoint_files.latest_complete_checkpoint(upstream_main.get_latest_checkpoint)(
        os.path.join(folder, "checkpoints"), remote=False
    )


def test_atomic_save_replaces_whole_file_or_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "epoch_1.pt"
    _checkpoint(target, 1)
    real_save = torch.save

    def dies_halfway(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # e.g. SIGTERM of a requeue turned into an exception

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_files.atomic_save({"epoch": 2}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(target)["epoch"] == 1 and os.listdir(tmp_path) == ["epoch_1.pt"]

    (tmp_path / "epoch_1.pt.tmp-999999").write_bytes(b"left by a killed attempt")
    checkpoint_files.atomic_save({"epoch": 2}, str(target))
    assert torch.load(target)["epoch"] == 2 and os.listdir(tmp_path) == ["epoch_1.pt"]


def test_torch_proxy_saves_atomically_and_delegates_the_rest(tmp_path):
    proxy = checkpoint_files.AtomicSaveTorch()
    assert proxy.tensor is torch.tensor and proxy.nn is torch.nn and proxy.distributed is torch.distributed
    proxy.save({"x": proxy.ones(2)}, tmp_path / "a.pt")
    with open(tmp_path / "b.pt", "wb") as f:  # a file object goes straight to torch
        proxy.save({"x": proxy.ones(2)}, f)
    assert torch.equal(torch.load(tmp_path / "a.pt")["x"], torch.load(tmp_path / "b.pt")["x"])
    assert sorted(os.listdir(tmp_path)) == ["a.pt", "b.pt"]


def test_patches_are_scoped_to_the_run():
    stock = upstream_main.torch, upstream_main.get_latest_checkpoint
    with patched_open_clip_train():
        assert isinstance(upstream_main.torch, checkpoint_files.AtomicSaveTorch)
        assert upstream_main.get_latest_checkpoint is not stock[1]
    assert (upstream_main.torch, upstream_main.get_latest_checkpoint) == stock


def test_latest_skips_a_truncated_checkpoint_with_a_warning(tmp_path, caplog):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for epoch in (1, 2, 9, 10):  # natural order: epoch_10 is the newest, as upstream sorts
        _with_state(ckpts / f"epoch_{epoch}.pt", epoch)
    assert _latest(tmp_path) == str(ckpts / "epoch_10.pt")
    _truncate(ckpts / "epoch_10.pt")
    with caplog.at_level(logging.WARNING):
        assert _latest(tmp_path) == str(ckpts / "epoch_9.pt")
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(ckpts / "epoch_10.pt") in warning and "failed finding central directory" in warning


def test_latest_skips_a_checkpoint_whose_selection_state_is_incomplete(tmp_path, caplog):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    _with_state(ckpts / "epoch_1.pt", 1)
    _with_state(ckpts / "epoch_2.pt", 2)
    _with_state(ckpts / "epoch_3.pt", 3, ranks=[0])  # rank 1 killed before renaming its file
    _with_state(ckpts / "epoch_4.pt", 4)
    _truncate(state_path(str(ckpts / "epoch_4.pt")) + ".rank1-of-2")  # an older tool's write
    with caplog.at_level(logging.WARNING):
        assert _latest(tmp_path) == str(ckpts / "epoch_2.pt")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "epoch_4.pt" in warnings[0] and "epoch_4.dissect-state.rank1-of-2" in warnings[0]
    assert "epoch_3.pt" in warnings[1] and "rank files [1] of 2 are missing" in warnings[1]


def test_latest_accepts_legacy_checkpoints_and_runs_without_state(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    torch.save({"epoch": 1}, ckpts / "epoch_1.pt", _use_new_zipfile_serialization=False)
    assert _latest(tmp_path) == str(ckpts / "epoch_1.pt")  # no state files: --selection none
    _truncate(ckpts / "epoch_1.pt", keep=0.9)
    assert _latest(tmp_path) is None  # nothing complete: the run starts afresh, as upstream's would


def test_resume_latest_falls_back_and_retrains_the_same_epoch(tiny_data, tmp_path):
    """A truncated epoch_2.pt: the resume takes epoch_1.pt with its selection state and trains
    epoch 2 again, ending bit-identical to the uninterrupted run."""
    flags = [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        tiny_data.train,
        "--dataset-type",
        "webdataset",
        "--workers",
        "1",
        "--logs",
        str(tmp_path),
        "--name",
        "run",
        "--epochs",
        "2",
        "--selection",
        "dissect-mome",
        "--resume",
        "latest",
        "--train-num-samples",
        "128",
    ]
    first = run_module("open_clip_dissect.main", flags)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpts = tmp_path / "run" / "checkpoints"
    assert not [name for name in os.listdir(ckpts) if checkpoint_files.TEMP_MARK in name]
    shutil.copy(ckpts / "epoch_2.pt", tmp_path / "uninterrupted.pt")
    state = state_path(str(ckpts / "epoch_2.pt")) + ".rank0-of-1"
    shutil.copy(state, tmp_path / "uninterrupted.state")
    _truncate(ckpts / "epoch_2.pt")

    again = run_module("open_clip_dissect.main", flags)
    assert again.returncode == 0, again.stderr[-3000:]
    with open(tmp_path / "run" / "out.log") as f:
        log = f.read()
    assert f"skipping {ckpts / 'epoch_2.pt'}, it is incomplete" in log
    assert f"resuming checkpoint '{ckpts / 'epoch_1.pt'}' (epoch 1)" in log
    assert f"Selection state of epoch 1 restored from 1 rank file(s) of {state_path(str(ckpts / 'epoch_1.pt'))}" in log
    ours, ref = torch.load(ckpts / "epoch_2.pt"), torch.load(tmp_path / "uninterrupted.pt")
    assert ours["epoch"] == 2 and ours["state_dict"].keys() == ref["state_dict"].keys()
    assert all(torch.equal(ours["state_dict"][k], ref["state_dict"][k]) for k in ref["state_dict"])
    ours, ref = torch.load(state, weights_only=True), torch.load(tmp_path / "uninterrupted.state", weights_only=True)
    assert all(torch.equal(ours["store"][k], ref["store"][k]) for k in ref["store"])
    assert torch.equal(ours["generator"], ref["generator"])
