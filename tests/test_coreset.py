"""embed -> score -> filter -> train with --keep-list, with a tiny oracle trained in the test."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, TINY_TRAIN_FLAGS, run_module

from open_clip_dissect.core.audit import auroc
from open_clip_dissect.errors import InputError
from open_clip_dissect.offline import coreset

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast


def _ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _embed_score_filter_train(oracle, tiny_data, tmp_path):
    emb = tmp_path / "emb"
    embed = [
        "embed",
        "--model",
        TINY,
        "--checkpoint",
        oracle,
        "--data",
        tiny_data.train,
        "--out",
        str(emb),
        "--batch-size",
        "64",
        "--quiet",
    ]
    _ok(run_module("open_clip_dissect.cli", embed))
    index = json.loads((emb / "index.json").read_text())
    assert len(index["parts"]) == 4 and sum(p["count"] for p in index["parts"].values()) == 512
    again = run_module("open_clip_dissect.cli", embed)  # resumable: every part is skipped
    _ok(again)
    target = tmp_path / "target"
    _ok(
        run_module(
            "open_clip_dissect.cli",
            [
                "embed",
                "--model",
                TINY,
                "--checkpoint",
                oracle,
                "--data",
                tiny_data.val_csv,
                "--out",
                str(target),
                "--quiet",
            ],
        )
    )

    scores = tmp_path / "scores.parquet"
    _ok(
        run_module(
            "open_clip_dissect.cli",
            [
                "score",
                "--embeddings",
                str(emb),
                "--target",
                str(target),
                "--out",
                str(scores),
                "--scores",
                "clipscore",
                "negcliploss",
                "normsim2",
                "normsiminf",
                "vas",
                "vas-d",
                "--negcliploss-batch-size",
                "128",
                "--negcliploss-repeats",
                "5",
            ],
        )
    )
    frame = pd.read_parquet(scores)
    assert len(frame) == 512 and frame["key"].str.contains(".tar/").all() and frame["uid"].str.len().eq(32).all()
    clean = torch.tensor((frame["noisy"] == 0).to_numpy())
    for name in ("clipscore", "negcliploss"):  # the oracle puts clean pairs above shuffled ones
        assert auroc(torch.tensor(frame[name].to_numpy()), clean) > 0.75, name

    # forgetting joins a run's selection records by key (here: two hand-written epochs in which
    # every second sample falls from above to below the median)
    from open_clip_dissect.openclip.training.selection_record import write_epoch

    up = torch.arange(512.0)
    down = torch.where(torch.arange(512) % 2 == 0, -up, up)
    for e, curr in enumerate((up + 1000, down)):
        write_epoch(
            str(tmp_path / "rec"),
            e,
            frame["key"].tolist(),
            {
                "curr": curr,
                "hist": curr,
                "delta": curr,
                "kept": torch.ones(512, dtype=torch.bool),
                "noisy": torch.full((512,), -1, dtype=torch.int8),
            },
        )
    _ok(
        run_module(
            "open_clip_dissect.cli",
            [
                "score",
                "--embeddings",
                str(emb),
                "--scores",
                "forgetting",
                "--selection-record",
                str(tmp_path / "rec"),
                "--out",
                str(tmp_path / "forgetting.parquet"),
            ],
        )
    )
    forgetting = pd.read_parquet(tmp_path / "forgetting.parquet")
    assert forgetting["key"].tolist() == frame["key"].tolist()
    learned_first = np.arange(512) >= 256  # >= the epoch-0 median
    learned_then = (np.arange(512) % 2 == 1) & (np.arange(512) >= 256)
    assert forgetting["forgetting"].tolist() == (learned_first & ~learned_then).astype(int).tolist()

    keep = tmp_path / "keep"
    result = run_module(
        "open_clip_dissect.cli",
        [
            "filter",
            "--scores",
            str(scores),
            "--keep",
            "negcliploss:0.5",
            "--keep",
            "normsiminf:0.25",
            "--out",
            str(keep),
        ],
    )
    _ok(result)
    summary = json.loads(result.stdout)
    assert summary["kept"] == 128 and summary["noisy_fraction_kept"] < summary["noisy_fraction_pool"]
    uids = np.load(keep / "uids.npy")
    assert uids.dtype == np.dtype("u8,u8") and len(uids) == 128 and (np.sort(uids) == uids).all()

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
        "kept",
        "--epochs",
        "1",
        "--keep-list",
        str(keep),
    ]
    _ok(run_module("open_clip_dissect.main", flags))
    with open(tmp_path / "kept" / "out.log") as f:
        assert "[128/128 (100%)]" in f.read()  # an epoch is one pass over the 128 kept samples


def test_filter_chain_by_hand():
    frame = pd.DataFrame({"key": list("abcdefghij"), "a": np.arange(10.0), "b": np.arange(10.0)[::-1]})
    # a:0.5 keeps f..j (a = 5..9); b:0.2 keeps 2 of those with the highest b: f, g
    rows = coreset.apply_rules(frame, coreset.parse_rules(["a:0.5", "b:0.2"]))
    assert frame["key"].iloc[rows].tolist() == ["f", "g"]
    with pytest.raises(InputError, match="--keep"):
        coreset.parse_rules(["a:1.5"])
    with pytest.raises(InputError, match="no score column"):
        coreset.apply_rules(frame, [("c", 0.5)])


def test_datacomp_uids():
    uids = coreset.datacomp_uids(["ffffffffffffffff0000000000000001", "00000000000000010000000000000002"])
    assert uids.tolist() == [(1, 2), (2**64 - 1, 1)]


def _online_oracle_clipscore_keeps_a_cleaner_set(oracle, tiny_data, tmp_path):
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
        "oracle-online",
        "--epochs",
        "1",
        "--selection",
        "clipscore-oracle",
        "--oracle-model",
        TINY,
        "--oracle-checkpoint",
        oracle,
    ]
    _ok(run_module("open_clip_dissect.main", flags))
    with open(tmp_path / "oracle-online" / "selection.jsonl") as f:
        audit = json.loads(f.readline())
    assert audit["audit_kept_precision"] > audit["audit_random_precision"] + 0.15
    missing = run_module("open_clip_dissect.main", [*flags[:-2], "--name", "no-oracle"])
    assert missing.returncode != 0 and "--oracle-checkpoint" in missing.stderr


def test_forgetting_events_by_hand(tmp_path):
    from open_clip_dissect.openclip.training.selection_record import write_epoch

    keys = ["a", "b", "c", "d"]
    # epoch medians are 5.5: learned = curr >= 5.5
    epochs = [
        [10.0, 1.0, 9.0, 2.0],  # learned: a, c
        [1.0, 10.0, 9.0, 2.0],  # learned: b, c  -> a forgotten
        [9.0, 1.0, 2.0, 10.0],
    ]  # learned: a, d  -> b and c forgotten
    for e, curr in enumerate(epochs):
        t = torch.tensor(curr)
        write_epoch(
            str(tmp_path),
            e,
            keys,
            {
                "curr": t,
                "hist": t,
                "delta": t,
                "kept": torch.ones(4, dtype=torch.bool),
                "noisy": torch.full((4,), -1, dtype=torch.int8),
            },
        )
    events = coreset.forgetting_scores(str(tmp_path)).set_index("key")["forgetting"].to_dict()
    assert events == {"a": 1, "b": 1, "c": 1, "d": 0}


def test_the_trained_oracle_offline_and_online(oracle, tiny_data, tmp_path):
    """The two uses of a pretrained oracle in one test, so that one worker trains the session's
    oracle and no other waits on its lock: embed, score, filter and train on the keep-list
    (offline); clipscore-oracle selecting during training (online)."""
    for part in (_embed_score_filter_train, _online_oracle_clipscore_keeps_a_cleaner_set):
        folder = tmp_path / part.__name__.strip("_")
        folder.mkdir()
        part(oracle, tiny_data, folder)
