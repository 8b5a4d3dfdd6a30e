"""End-to-end runs of ``python -m open_clip_dissect.main`` against stock OpenCLIP."""

import json
import os

import pytest
import torch
from conftest import TINY, TINY_TRAIN_FLAGS, read_jsonl, run_module
from conftest import train_losses as _losses

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast


def _ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_selection_none_is_stock_openclip(tiny_data, tmp_path):
    """Same seed, same data: the same loss at every step and bit-identical weights."""
    with open(tiny_data.train_csv) as f:  # a csv epoch is the whole file: its first 128 pairs
        (tmp_path / "train.csv").write_text("".join(f.readlines()[:129]))
    flags = [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        str(tmp_path / "train.csv"),
        "--dataset-type",
        "csv",
        "--csv-img-key",
        "filepath",
        "--csv-caption-key",
        "title",
        "--epochs",
        "2",
        "--workers",
        "1",
        "--logs",
        str(tmp_path),
    ]
    _ok(run_module("stock_openclip", [*flags, "--name", "stock"]))
    _ok(run_module("open_clip_dissect.main", [*flags, "--name", "ours", "--selection", "none"]))
    stock = _losses(tmp_path / "stock" / "out.log")
    ours = _losses(tmp_path / "ours" / "out.log")
    assert len(stock) == 2 * 4 and ours == stock
    a = torch.load(tmp_path / "stock" / "checkpoints" / "epoch_2.pt", map_location="cpu")
    b = torch.load(tmp_path / "ours" / "checkpoints" / "epoch_2.pt", map_location="cpu")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_webdataset_run_checkpoint_resume_and_summary(tiny_data, tmp_path):
    flags = [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        tiny_data.train,
        "--val-data",
        tiny_data.val,
        "--dataset-type",
        "webdataset",
        "--workers",
        "1",
        "--logs",
        str(tmp_path),
        "--name",
        "run",
        "--retrieval-data",
        tiny_data.test,
        "--train-num-samples",
        "128",
    ]
    _ok(run_module("open_clip_dissect.main", [*flags, "--epochs", "1"]))
    run = tmp_path / "run"
    assert sorted(os.listdir(run / "checkpoints")) == ["epoch_1.pt", "results.jsonl"]

    result = run_module("open_clip_dissect.main", [*flags, "--epochs", "2", "--resume", "latest"])
    _ok(result)
    with open(run / "out.log") as f:
        log = f.read()
    assert "resuming checkpoint" in log and "(epoch 1)" in log
    assert [e for e, _, _ in _losses(run / "out.log")] == ["0"] * 4 + ["1"] * 4
    results = read_jsonl(run / "checkpoints" / "results.jsonl")
    assert [r["epoch"] for r in results] == [1, 1, 2, 2]  # ours (retrieval) and OpenCLIP's (val)
    retrieval = [r for r in results if "retrieval_R@sum" in r]
    assert [(r["retrieval_images"], r["retrieval_captions"]) for r in retrieval] == [(32, 96)] * 2
    assert os.path.isfile(run / "checkpoints" / "epoch_2.pt")

    summary = run_module("open_clip_dissect.cli", ["summary", str(run)])
    _ok(summary)
    assert "R@sum" in summary.stdout and len(summary.stdout.strip().splitlines()) == 4
    last = summary.stdout.strip().splitlines()[-1].split()
    assert float(last[7]) == pytest.approx(retrieval[-1]["retrieval_R@sum"], abs=0.01)

    evaluated = run_module(
        "open_clip_dissect.cli",
        [
            "eval",
            "--model",
            TINY,
            "--checkpoint",
            str(run / "checkpoints" / "epoch_2.pt"),
            "--data",
            tiny_data.test_csv,
            "--out",
            str(tmp_path / "eval.json"),
        ],
    )
    _ok(evaluated)
    with open(tmp_path / "eval.json") as f:
        offline = json.load(f)
    assert offline["captions"] == 96 and offline["R@sum"] == pytest.approx(retrieval[-1]["retrieval_R@sum"], abs=0.01)
