"""Same command, same seed, same bits: two runs on one machine give identical selection records
(every column: key, kept, curr, hist, delta, ...) and bit-identical weights, with two loader
workers, with ``--selection-record`` on or off, and across a SIGKILL and ``--resume latest``;
``--deterministic`` pins the CPU kernels so that other hosts compute the same bits
(docs/determinism.md)."""

import glob
import os
import platform
import signal

import pandas as pd
import pytest
import torch
from conftest import TINY_TRAIN_FLAGS, run_module

from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.launch import determinism
from open_clip_dissect.openclip.launch.crash_points import VARIABLE

# A history strategy and a loss-weighting one (InfoBatch rescales the kept losses).
STRATEGIES = ("dissect-mome", "infobatch")


def _flags(data, logs, name, selection, record=True, epochs=2):
    flags = [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        data.train,
        "--dataset-type",
        "webdataset",
        "--workers",
        "2",
        "--epochs",
        str(epochs),
        "--selection",
        selection,
        "--logs",
        str(logs),
        "--name",
        name,
        "--save-most-recent",
    ]
    return flags + (["--selection-record", str(logs / f"{name}-records")] if record else [])


def _train(flags, env=None, fresh=False):
    result = run_module("open_clip_dissect.main", flags, env=env, fresh=fresh)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _records(logs, name):
    """Every epoch's record, whole: {file name: frame}."""
    paths = sorted(glob.glob(str(logs / f"{name}-records" / "epoch_*.parquet")))
    assert paths
    return {os.path.basename(p): pd.read_parquet(p) for p in paths}


def _weights(logs, name):
    return torch.load(logs / name / "checkpoints" / "epoch_latest.pt", map_location="cpu")["state_dict"]


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _same_records(a, b):
    return a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("selection", STRATEGIES)
def test_the_same_command_gives_the_same_bits(two_rank_data, tmp_path, selection):
    for name in ("first", "again"):
        _train(_flags(two_rank_data, tmp_path, name, selection))
    first, again = _records(tmp_path, "first"), _records(tmp_path, "again")
    assert {"key", "kept", "curr", "hist", "delta"} <= set(first["epoch_0.rank0-of-1.parquet"].columns)
    assert _same_records(first, again)
    assert _same_weights(_weights(tmp_path, "first"), _weights(tmp_path, "again"))
    # Recording adds a scoring pass's reads, never a draw: the weights do not change without it.
    _train(_flags(two_rank_data, tmp_path, "unrecorded", selection, record=False))
    assert _same_weights(_weights(tmp_path, "first"), _weights(tmp_path, "unrecorded"))


@pytest.mark.slow
def test_a_killed_and_resumed_run_gives_the_same_bits(two_rank_data, tmp_path):
    """InfoBatch (its pruning draws and loss weights) with two workers, killed in the middle of
    epoch 2's training and resumed: the records of every epoch and the final weights are the
    uninterrupted run's."""
    _train(_flags(two_rank_data, tmp_path, "straight", "infobatch", epochs=3))
    flags = _flags(two_rank_data, tmp_path, "killed", "infobatch", epochs=3)
    killed = run_module("open_clip_dissect.main", flags, env={VARIABLE: "train:1:2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    _train([*flags, "--resume", "latest"], env={VARIABLE: ""})
    assert _same_records(_records(tmp_path, "straight"), _records(tmp_path, "killed"))
    assert _same_weights(_weights(tmp_path, "straight"), _weights(tmp_path, "killed"))


# 22 repeats catch a difference that shows in 1 run of 10 with probability 1 - 0.9 ** 22 = 0.90.
REPEATS = 22


@pytest.mark.slow
def test_repeats_agree_every_time(two_rank_data, tmp_path):
    """The stress variant: one short dissect-mome epoch, two workers, run REPEATS times."""
    base = _flags(two_rank_data, tmp_path, "run0", "dissect-mome", epochs=1)
    _train(base)
    reference_records, reference_weights = _records(tmp_path, "run0"), _weights(tmp_path, "run0")
    differing = []
    for i in range(1, REPEATS):
        name = f"run{i}"
        _train(_flags(two_rank_data, tmp_path, name, "dissect-mome", epochs=1))
        if not (
            _same_records(reference_records, _records(tmp_path, name))
            and _same_weights(reference_weights, _weights(tmp_path, name))
        ):
            differing.append(i)
    assert differing == [], f"runs {differing} of {REPEATS} differ from the first"


@pytest.mark.slow
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pins are x86-64's")
def test_deterministic_pins_the_cpu_kernels(two_rank_data, tmp_path):
    """``--deterministic`` computes what a process started with the pins in its environment
    computes; on a host with wider kernels than AVX2, the unpinned run differs (the cause of the
    benchmark's runs that differed between machines)."""
    _train(_flags(two_rank_data, tmp_path, "pinned", "dissect-mome", epochs=1) + ["--deterministic"], fresh=True)
    with open(tmp_path / "pinned" / "out.log") as f:
        assert "--deterministic: CPU kernels AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2)" in f.read()
    _train(_flags(two_rank_data, tmp_path, "by-env", "dissect-mome", epochs=1), env=determinism.CPU_PINS)
    assert _same_records(_records(tmp_path, "pinned"), _records(tmp_path, "by-env"))
    assert _same_weights(_weights(tmp_path, "pinned"), _weights(tmp_path, "by-env"))
    _train(_flags(two_rank_data, tmp_path, "host", "dissect-mome", epochs=1), fresh=True)
    with open(tmp_path / "host" / "out.log") as f:
        host_kernels = f.read().split("CPU kernels: ")[1].split()[0]
    if host_kernels != "AVX2":  # e.g. AVX512: its sums round otherwise
        assert not _same_weights(_weights(tmp_path, "pinned"), _weights(tmp_path, "host"))


def test_pins_only_on_x86_and_keep_what_the_user_set():
    assert determinism.pin_cpu_kernels({}, machine="aarch64") == {}
    assert determinism.pin_cpu_kernels({}, machine="x86_64") == determinism.CPU_PINS
    mine = {"ATEN_CPU_CAPABILITY": "default"}
    assert determinism.pin_cpu_kernels(mine, machine="x86_64")["ATEN_CPU_CAPABILITY"] == "default"


def test_a_process_that_computed_before_the_flag_is_refused(monkeypatch):
    monkeypatch.setattr(determinism, "cpu_kernels", lambda: "AVX512")
    monkeypatch.setattr(determinism.platform, "machine", lambda: "x86_64")
    environ = {}
    with pytest.raises(InputError, match="--deterministic: this process computed before the flag was read"):
        determinism.request(True, environ)
    assert environ == determinism.CPU_PINS  # (a fresh environment, not this process's)
    monkeypatch.setattr(torch.cpu, "_is_avx2_supported", lambda: False, raising=False)
    asked = []  # (this process's own algorithms stay as they are)
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: asked.append((a, k)))
    environ = {}
    determinism.request(True, environ)  # a host without AVX2: nothing to refuse, its kernels are its own
    assert asked == [((True,), {"warn_only": True})] and environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
