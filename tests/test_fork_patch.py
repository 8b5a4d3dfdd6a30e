"""patches/: the patch for forks of open_clip_train applies to the pinned release and trains."""

import glob
import os
import shutil
import subprocess
import sys
from importlib.metadata import version

import open_clip_train
import pytest
from conftest import REPO, TINY_TRAIN_FLAGS, read_jsonl, run_module

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast

PATCH = os.path.join(REPO, "patches", f"open_clip_train-{version('open_clip_torch')}.patch")


def _pristine_copy(root):
    """The installed release's open_clip_train sources, laid out like OpenCLIP's repository."""
    fork = root / "fork"
    shutil.copytree(
        os.path.dirname(open_clip_train.__file__),
        fork / "src" / "open_clip_train",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return fork


def _git_apply(fork, *extra):
    return subprocess.run(["git", "apply", *extra, PATCH], cwd=fork, capture_output=True, text=True)


def test_a_patch_exists_for_the_pinned_version():
    assert os.path.isfile(PATCH), f"no patch for open_clip_torch {version('open_clip_torch')}: run make patch"
    with open(os.path.join(REPO, "setup.cfg")) as f:
        assert f"open_clip_torch=={version('open_clip_torch')}" in f.read()
    assert glob.glob(os.path.join(REPO, "patches", "*.patch")) == [PATCH]


def test_patch_is_what_make_patch_generates(tmp_path):
    out = tmp_path / "fresh.patch"
    result = subprocess.run(
        ["bash", os.path.join(REPO, "scripts", "make_patch.sh"), str(out)],
        env={**os.environ, "PY": sys.executable},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    with open(PATCH) as committed:
        assert out.read_text() == committed.read(), "patches/ is stale: run make patch"


def test_patched_fork_trains_one_epoch_with_selection(tiny_data, tmp_path):
    fork = _pristine_copy(tmp_path)
    check = _git_apply(fork, "--check")
    assert check.returncode == 0, f"the patch no longer applies to the pinned release:\n{check.stderr}"
    assert _git_apply(fork).returncode == 0
    with open(fork / "src" / "open_clip_train" / "main.py") as f:
        assert "session_for(args)" in f.read()

    flags = [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        tiny_data.train,
        "--dataset-type",
        "webdataset",
        "--workers",
        "1",
        "--logs",
        str(tmp_path / "logs"),
        "--name",
        "fork",
        "--epochs",
        "1",
        "--selection",
        "dissect-mome",
        "--ratio",
        "0.5",
        "--train-num-samples",
        "128",
    ]
    env = {"PYTHONPATH": str(fork / "src")}
    result = run_module("open_clip_train.main", flags, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = read_jsonl(tmp_path / "logs" / "fork" / "selection.jsonl")[0]
    assert summary["candidates"] == 128 and summary["kept"] == 64 and "audit_auroc" in summary
    assert os.path.isfile(tmp_path / "logs" / "fork" / "checkpoints" / "epoch_1.dissect-state.rank0-of-1")
    with open(tmp_path / "logs" / "fork" / "out.log") as f:
        log = f.read()
    assert "Selection audit epoch 0" in log

    # (the stock module would have rejected --selection: the patched copy ran.) It rejects a bad
    # value naming the flag; without any dissect flag the fork's own code runs (no selection files)
    bad = run_module("open_clip_train.main", [*flags[:-6], "--selection", "dissect-mome", "--ratio", "2"], env=env)
    assert bad.returncode != 0 and "--ratio: must be in (0, 1]" in bad.stderr
    # (csv: stock OpenCLIP 3.3.0's own webdataset pipeline fails on webdataset 1.0's end-of-shard
    # marker, which our keyed loader fixes; see docs/openclip.md, "Versions and CPU notes")
    with open(tiny_data.train_csv) as f:  # a csv epoch is the whole file: its first 128 pairs
        (tmp_path / "train.csv").write_text("".join(f.readlines()[:129]))
    plain = [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        str(tmp_path / "train.csv"),
        "--dataset-type",
        "csv",
        "--workers",
        "1",
        "--logs",
        str(tmp_path / "logs"),
        "--name",
        "plain",
        "--epochs",
        "1",
    ]
    result = run_module("open_clip_train.main", plain, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not os.path.exists(tmp_path / "logs" / "plain" / "selection.jsonl")


def test_patch_refuses_a_changed_upstream(tmp_path):
    fork = _pristine_copy(tmp_path)
    main = fork / "src" / "open_clip_train" / "main.py"
    main.write_text(main.read_text().replace("    data = get_data(\n", "    data = load_all_data(\n"))
    result = _git_apply(fork, "--check")
    assert result.returncode != 0 and "main.py" in result.stderr


@pytest.mark.parametrize("anchor", ["args = parser.parse_args(args)"])
def test_fork_edits_name_a_missing_anchor(tmp_path, anchor):
    fork = _pristine_copy(tmp_path)
    params = fork / "src" / "open_clip_train" / "params.py"
    params.write_text(params.read_text().replace(anchor, "args = parser.parse_known_args(args)[0]"))
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "fork_edits.py"), str(fork / "src" / "open_clip_train")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "params.py" in result.stderr and repr(anchor) in result.stderr
