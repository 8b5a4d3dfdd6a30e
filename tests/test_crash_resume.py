"""Crash-safe selection state: a run killed with SIGKILL at exact moments (``crash_points``)
and resumed with ``--resume latest`` selects, and trains, exactly as an uninterrupted run.

The windows: during an epoch's training; after the epoch's selection state is written but
before OpenCLIP's checkpoint (during evaluation); after the checkpoint is written. The runs use
``--save-most-recent --delete-previous-checkpoint`` with evaluation data, as cluster jobs do."""

import glob
import os
import signal

import pandas as pd
import pytest
import torch
from conftest import TINY_TRAIN_FLAGS, run_module

from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.launch.crash_points import VARIABLE
from open_clip_dissect.openclip.state import state_files

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast


def _flags(data, logs, name, records):
    return [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        data.train,
        "--val-data",
        data.val,
        "--dataset-type",
        "webdataset",
        "--workers",
        "1",
        "--train-num-samples",
        "128",
        "--epochs",
        "3",
        "--selection",
        "dissect-mome",
        "--logs",
        str(logs),
        "--name",
        name,
        "--selection-record",
        str(records),
        "--save-most-recent",
        "--delete-previous-checkpoint",
    ]


def _decisions(records, epoch):
    """key -> kept of one epoch's records (every rank file of the epoch)."""
    frame = pd.concat([pd.read_parquet(p) for p in sorted(glob.glob(str(records / f"epoch_{epoch}*.parquet")))])
    return dict(zip(frame["key"], frame["kept"]))


def _run(flags, kill=None):
    return run_module("open_clip_dissect.main", flags, env={VARIABLE: kill} if kill else {VARIABLE: ""})


def test_killed_three_times_resumes_exactly(tiny_data, tmp_path):
    reference = _run(_flags(tiny_data, tmp_path, "reference", tmp_path / "rec_reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    flags = _flags(tiny_data, tmp_path, "crashed", tmp_path / "rec_crashed")
    resume = [*flags, "--resume", "latest"]
    # 1. killed during the evaluation after epoch 2: its state is written, its checkpoint is not
    assert _run(flags, kill="after-state:1").returncode == -signal.SIGKILL
    checkpoints = tmp_path / "crashed" / "checkpoints"
    assert state_files.checkpoint_epoch(str(checkpoints / "epoch_latest.pt")) == 1
    # 2. resumed from epoch 1 (not paired with epoch 2's newer state); killed once epoch 2's
    #    checkpoint is written
    assert _run(resume, kill="after-checkpoint:1").returncode == -signal.SIGKILL
    assert state_files.checkpoint_epoch(str(checkpoints / "epoch_latest.pt")) == 2
    # 3. resumed from epoch 2; killed in the middle of epoch 3's training
    assert _run(resume, kill="train:2:2").returncode == -signal.SIGKILL
    # 4. resumed from epoch 2 again, runs to the end
    last = _run(resume)
    assert last.returncode == 0, last.stderr[-3000:]
    with open(tmp_path / "crashed" / "out.log") as f:
        log = f.read()
    assert "Selection state of epoch 1 restored" in log and "Selection state of epoch 2 restored" in log

    for epoch in (1, 2):  # every decision of the epochs trained again equals the uninterrupted run's
        assert _decisions(tmp_path / "rec_crashed", epoch) == _decisions(tmp_path / "rec_reference", epoch)
    a = torch.load(tmp_path / "reference" / "checkpoints" / "epoch_3.pt", map_location="cpu")["state_dict"]
    b = torch.load(checkpoints / "epoch_3.pt", map_location="cpu")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Only the states a checkpoint needs are left: epoch 3's (epoch_3.pt and epoch_latest.pt).
    assert sorted(p for p in os.listdir(checkpoints) if p != "results.jsonl") == [
        "epoch_3.dissect-state.rank0-of-1",
        "epoch_3.pt",
        "epoch_latest.pt",
    ]


def test_resume_never_pairs_a_state_of_another_epoch(tmp_path):
    """A checkpoint of epoch 1 whose only state beside it records epoch 2 is an error naming
    both files; a state written under other selection settings is an error naming the fields."""
    from open_clip_dissect.core.selector import Selector
    from open_clip_dissect.core.strategies import create_strategy

    selector = Selector(create_strategy("dissect-mome"), ratio=0.5)
    checkpoint = tmp_path / "epoch_latest.pt"
    torch.save({"epoch": 1, "state_dict": {}}, checkpoint)
    state_files.save_state(state_files.epoch_state_path(str(tmp_path), 2), selector.state_dict(), epoch=2)
    with pytest.raises(InputError, match=r"holds epoch 1.*epoch_1.dissect-state \(none\)") as error:
        state_files.find_state(str(checkpoint), 1)
    assert str(checkpoint) in str(error.value)
    state_files.save_state(
        state_files.epoch_state_path(str(tmp_path), 1),
        selector.state_dict(),
        epoch=1,
        fingerprint={"ratio": 0.5, "seed": 0, "world_size": 1},
    )
    base = state_files.find_state(str(checkpoint), 1)
    assert base.endswith("epoch_1.dissect-state")
    with pytest.raises(InputError, match=r"ratio: saved 0.5, now 0.3") as error:
        state_files.restore_selector(
            selector, state_files.state_files(base), 0, {"ratio": 0.3, "seed": 0, "world_size": 2}
        )  # world size may change
    assert "seed" not in str(error.value) and "--selection-reset-history" in str(error.value)


def test_stale_states_go_only_once_no_checkpoint_needs_them(tmp_path):
    from open_clip_dissect.core.selector import Selector
    from open_clip_dissect.core.strategies import create_strategy

    state = Selector(create_strategy("random"), ratio=0.5).state_dict()
    for epoch in (1, 2, 3, 4):
        state_files.save_state(state_files.epoch_state_path(str(tmp_path), epoch), state, epoch=epoch)
    torch.save({"epoch": 2}, tmp_path / "epoch_2.pt")
    # epoch_latest.pt holds 3; epoch 4's checkpoint is still being written
    removed = state_files.collect_stale_states(str(tmp_path), latest_epoch=3)
    assert [os.path.basename(b) for b in removed] == ["epoch_1.dissect-state"]
    left = sorted(p for p in os.listdir(tmp_path) if "dissect-state" in p)
    assert left == [f"epoch_{e}.dissect-state.rank0-of-1" for e in (2, 3, 4)]


def test_a_truncated_or_foreign_state_file_is_named(tmp_path):
    from open_clip_dissect.core.selector import Selector
    from open_clip_dissect.core.strategies import create_strategy

    path = state_files.save_state(
        str(tmp_path / "epoch_1.dissect-state"),
        Selector(create_strategy("dissect-mome"), ratio=0.5).state_dict(),
        epoch=1,
    )
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read") as error:
        state_files.load_state(path)
    assert error.value.subject == path
    torch.save({"format": 1, "store": {}}, path)  # a state of the earlier format
    with pytest.raises(InputError, match="format 1 .*expected 3"):
        state_files.load_state(path)


def test_the_fingerprint_covers_what_decides_and_not_what_is_ignored(caplog):
    from open_clip_dissect.openclip.launch import params

    def fingerprint(*argv):
        args = params.parse_args(["--selection", *argv])
        args.world_size = 1  # set by OpenCLIP's distributed set-up
        return params.selection_fingerprint(args)

    fixed = ["dissect-warmup", "--dissect-warmup-epochs", "3"]
    # the auto detector's flags do nothing with a numeric warm-up: not part of the fingerprint
    assert fingerprint(*fixed) == fingerprint(*fixed, "--dissect-auto-patience", "7")
    train_mode = fingerprint(*fixed, "--selection-scoring-mode", "train")
    with pytest.raises(InputError, match="selection_scoring_mode: saved 'eval', now 'train'"):
        state_files.check_fingerprint(fingerprint(*fixed), train_mode, "state")
    assert "ratio" not in fingerprint("infobatch") and "ratio" in fingerprint("random")
    # random's draw reads no score: its scoring flags may change on resume, and a state written
    # while its fingerprint still held them resumes
    plain = fingerprint("random")
    rescaled = fingerprint("random", "--clipscore-scale", "50", "--selection-scoring-mode", "train")
    assert plain == rescaled
    state_files.check_fingerprint(dict(plain, clipscore_scale=100.0, selection_scoring_mode="eval"), rescaled, "state")
    scored, rescored = fingerprint("small-loss"), fingerprint("small-loss", "--clipscore-scale", "50")
    with pytest.raises(InputError, match="clipscore_scale: saved 100.0, now 50.0"):
        state_files.check_fingerprint(scored, rescored, "state")
    # A format-2 state recorded every option and no scoring mode: read in format 3's terms.
    old = dict(
        fingerprint(*fixed),
        options={"warmup_epochs": 3, "auto_signal": "retrieval", "auto_patience": 2, "auto_min_improvement": 0.05},
    )
    del old["selection_scoring_mode"]
    with caplog.at_level("WARNING"):
        state_files.check_fingerprint(state_files.upgrade_fingerprint(old, train_mode, "state"), train_mode, "state")
    assert "does not record its scoring mode" in caplog.text
