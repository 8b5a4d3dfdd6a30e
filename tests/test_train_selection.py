"""Every strategy end to end through ``python -m open_clip_dissect.main`` on the synthetic set."""

import glob
import os
import shutil

import pandas as pd
import pytest
import torch
from conftest import TINY, read_jsonl, run_module, shard_training_flags

from open_clip_dissect.core.strategies import list_strategies, strategy_class

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast


def _ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _train(data, logs, name, *extra, epochs=1, env=None):
    flags = [*shard_training_flags(data, logs), "--name", name, "--epochs", str(epochs), *extra]
    return run_module("open_clip_dissect.main", flags, env=env)


# Strategies with phases run two epochs, with flags that make each phase show; the others run
# one epoch with their defaults.
SHORT_RUN_FLAGS = {
    "dissect-warmup": ["--dissect-warmup-epochs", "1"],  # warm-up epoch, then the differential
    "infobatch": ["--infobatch-anneal", "0"],  # prune in the second epoch
    "scan": ["--scan-warmup-epochs", "0", "--accum-freq", "2"],  # prepare, then prune
}


@pytest.fixture(scope="session")
def untrained_oracle(tmp_path_factory):
    """A checkpoint of the tiny model at initialisation: enough for the oracle strategies to run
    (that a trained oracle selects well is test_coreset's)."""
    import open_clip

    path = tmp_path_factory.mktemp("untrained-oracle") / "epoch_0.pt"
    torch.save({"epoch": 0, "state_dict": open_clip.create_model("dissect-vit-tiny").state_dict()}, path)
    return str(path)


@pytest.mark.parametrize("strategy", list_strategies())
def test_every_strategy_trains_with_audit_and_state(strategy, one_shard_data, tmp_path, request):
    cls = strategy_class(strategy)
    extra = [
        "--selection",
        strategy,
        "--ratio",
        "0.25",
        "--report-to",
        "tensorboard",
        *SHORT_RUN_FLAGS.get(strategy, []),
    ]
    if cls.needs_oracle:
        extra += [
            "--oracle-model",
            "dissect-vit-tiny",
            "--oracle-checkpoint",
            request.getfixturevalue("untrained_oracle"),
        ]
    epochs = 2 if strategy in SHORT_RUN_FLAGS else 1
    _ok(_train(one_shard_data, tmp_path, "run", *extra, epochs=epochs))
    run = tmp_path / "run"
    summaries = read_jsonl(run / "selection.jsonl")
    assert [s["epoch"] for s in summaries] == list(range(1, epochs + 1))
    for summary in summaries:
        assert summary["candidates"] == 128
        for key in ("audit_kept_precision", "audit_clean_recall", "audit_auroc"):
            assert 0.0 <= summary[key] <= 1.0
        assert summary["audit_random_precision"] == pytest.approx(1 - one_shard_data.noisy / 128, abs=0.01)
    kept = [s["kept"] for s in summaries]
    if cls.variable_kept:  # everything in epoch 1 (no history yet), then pruning
        assert kept[0] == 128 and 64 < kept[1] < 128, kept
    elif cls.keeps_all:
        assert kept == [128] * epochs
    else:
        assert kept == [32] * epochs  # k = round(0.25 * 32) of 4 batches
    checkpoints = run / "checkpoints"
    state = torch.load(checkpoints / f"epoch_{epochs}.dissect-state.rank0-of-1", weights_only=True)
    assert state["strategy"] == strategy
    assert (len(state["store"]["hash"]) == 128) == cls.needs_history  # history only where read
    if strategy == "scan":
        assert state["strategy_state"]["cycle_start"] == 0
        assert set(state["store"]["score"].tolist()) == {0.0, 1.0}  # nominations
    assert not [p for p in os.listdir(checkpoints) if p.endswith(".pt") and "state" in p]
    with open(run / "out.log") as f:
        log = f.read()
    assert f"Selection audit epoch {epochs - 1}" in log and "Contrastive_loss" in log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(run / "tensorboard")).Reload().Tags()["scalars"]
    assert "selection/kept_fraction" in tags and "selection/delta_mean" in tags
    assert "selection_epoch/audit_kept_precision" in tags


def test_baselines_refuse_what_they_cannot_do(tiny_data, tmp_path):
    fixed = _train(tiny_data, tmp_path, "fixed", "--selection", "infobatch", "--selection-batch-mode", "fixed")
    assert fixed.returncode == 2 and "--selection-batch-mode: --selection infobatch" in fixed.stderr
    siglip = _train(tiny_data, tmp_path, "siglip", "--selection", "scan", "--siglip")
    assert siglip.returncode != 0 and "--siglip" in siglip.stderr
    prune = _train(tiny_data, tmp_path, "prune", "--selection", "infobatch", "--infobatch-prune", "1")
    assert prune.returncode == 2 and "--infobatch-prune: must be in [0.0, 1.0)" in prune.stderr


def test_small_loss_keeps_a_cleaner_set_than_random(oracle, tiny_data, tmp_path):
    """From weights that tell clean pairs from shuffled ones (the session's oracle), small-loss
    keeps cleaner pairs than a random pick of the same size would (the audit's random precision
    is the clean share of the candidates): its losses reach the adapter aligned with their samples."""
    _ok(_train(tiny_data, tmp_path, "small-loss", "--selection", "small-loss", "--pretrained", oracle))
    first = read_jsonl(tmp_path / "small-loss" / "selection.jsonl")[0]
    assert first["audit_kept_precision"] > first["audit_random_precision"] + 0.1, first


def test_resume_selects_exactly_as_an_uninterrupted_run(one_shard_data, tmp_path):
    data = one_shard_data
    common = ["--selection", "dissect-mome", "--ratio", "0.5"]
    _ok(_train(data, tmp_path, "full", *common, "--selection-record", str(tmp_path / "rec_full"), epochs=2))
    # Resume the same schedule after its first epoch, under another --name: the state is found
    # next to the resumed checkpoint.
    checkpoint = str(tmp_path / "full" / "checkpoints" / "epoch_1.pt")
    _ok(
        _train(
            data,
            tmp_path,
            "second",
            *common,
            "--resume",
            checkpoint,
            "--selection-record",
            str(tmp_path / "rec_resumed"),
            epochs=2,
        )
    )
    full = pd.read_parquet(tmp_path / "rec_full" / "epoch_1.rank0-of-1.parquet")
    resumed = pd.read_parquet(tmp_path / "rec_resumed" / "epoch_1.rank0-of-1.parquet")
    assert list(full.columns) == ["key", "epoch", "curr", "hist", "delta", "kept", "noisy"]
    pd.testing.assert_frame_equal(full, resumed)
    a = torch.load(tmp_path / "full" / "checkpoints" / "epoch_2.pt", map_location="cpu")["state_dict"]
    b = torch.load(tmp_path / "second" / "checkpoints" / "epoch_2.pt", map_location="cpu")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # The wrong strategy, or a missing state file, fails before training, naming the file.
    wrong = _train(data, tmp_path, "wrong", "--selection", "clipscore", "--resume", checkpoint, epochs=2)
    assert wrong.returncode != 0 and "epoch_1.dissect-state" in wrong.stderr and "'dissect-mome'" in wrong.stderr
    os.makedirs(tmp_path / "bare")
    shutil.copy(checkpoint, tmp_path / "bare" / "epoch_1.pt")
    missing = _train(data, tmp_path, "missing", *common, "--resume", str(tmp_path / "bare" / "epoch_1.pt"), epochs=2)
    assert missing.returncode != 0 and "no selection state" in missing.stderr
    _ok(
        _train(
            data,
            tmp_path,
            "reset",
            *common,
            "--resume",
            str(tmp_path / "bare" / "epoch_1.pt"),
            "--selection-reset-history",
            epochs=2,
        )
    )

    # Distillation sees the kept samples too (the teacher is the checkpoint trained above).
    _ok(
        _train(
            data,
            tmp_path,
            "distill",
            "--selection",
            "clipscore",
            "--distill-model",
            TINY,
            "--distill-pretrained",
            checkpoint,
            epochs=1,
        )
    )
    with open(tmp_path / "distill" / "out.log") as f:
        assert "Distill_loss" in f.read()


def test_fixed_mode_siglip_accumulation_and_wandb(tiny_data, tmp_path):
    noisy = tmp_path / "noisy.txt"  # the user-supplied list takes over from the .json labels
    noisy.write_text("\n".join(f"{tiny_data.root}/train/00000.tar/{i:08d}" for i in range(128)))
    result = _train(
        tiny_data,
        tmp_path,
        "fixed",
        "--selection",
        "big-loss",
        "--ratio",
        "0.5",
        "--noisy-keys",
        str(noisy),
        "--selection-batch-mode",
        "fixed",
        "--siglip",
        "--accum-freq",
        "2",
        "--grad-checkpointing",
        "--report-to",
        "wandb",
        epochs=1,
        env={"WANDB_DIR": str(tmp_path)},
    )
    _ok(result)
    summary = read_jsonl(tmp_path / "fixed" / "selection.jsonl")[0]
    # 64 candidates per step to train 32: 512 / 64 = 8 loader batches, 4 optimizer steps.
    assert summary["candidates"] == 512 and summary["kept"] == 8 * 32
    assert summary["audit_random_precision"] == pytest.approx(384 / 512)
    with open(tmp_path / "fixed" / "out.log") as f:
        log = f.read()
    assert "[256/256 (100%)]" in log  # upstream's progress counts trained samples
    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(runs) == 1
    with open(runs[0], "rb") as f:
        assert b"selection/kept_fraction" in f.read()  # our scalars reached wandb (offline)


def test_auto_warmup_detects_once_and_resumes_exactly(one_shard_data, tmp_path):
    """``--dissect-warmup-epochs auto`` end to end: the detection is logged in one line and kept
    in selection.jsonl; a run resumed before or after it detects exactly once and ends with the
    weights of the uninterrupted run. (A threshold of 100% makes the loss signal fire as soon as
    it has two epochs to compare: at the end of epoch 1.)"""
    auto = [
        "--selection",
        "dissect-warmup",
        "--dissect-warmup-epochs",
        "auto",
        "--dissect-auto-signal",
        "loss",
        "--dissect-auto-min-improvement",
        "1.0",
        "--dissect-auto-window",  # the plain rule: fires on the first epoch that improved at all
        "1",
        "--dissect-auto-min-gain",
        "0",
        "--ratio",
        "0.5",
    ]
    _ok(_train(one_shard_data, tmp_path, "full", *auto, epochs=3))
    with open(tmp_path / "full" / "out.log") as f:
        lines = [line for line in f if "early-learning point detected" in line]
    assert len(lines) == 1 and "detected at epoch 1 (mean scoring-pass loss" in lines[0]
    assert lines[0].rstrip().endswith("selection by delta from epoch 2")
    rows = read_jsonl(tmp_path / "full" / "selection.jsonl")
    assert [r.get("selection_from_epoch") for r in rows] == [None, 2, 2]
    assert rows[1]["early_learning_point"] == 1
    assert all(r["clipscore_std"] > 0 and r["mean_loss"] > 0 and r["candidates"] == 128 for r in rows)
    final = torch.load(tmp_path / "full" / "checkpoints" / "epoch_3.pt", map_location="cpu")["state_dict"]
    for cut, detections in ((1, 1), (2, 0)):  # resumed before the detection, after it
        name = f"resumed{cut}"
        _ok(
            _train(
                one_shard_data,
                tmp_path,
                name,
                *auto,
                "--resume",
                str(tmp_path / "full" / "checkpoints" / f"epoch_{cut}.pt"),
                epochs=3,
            )
        )
        with open(tmp_path / name / "out.log") as f:
            assert sum("early-learning point detected" in line for line in f) == detections
        resumed = torch.load(tmp_path / name / "checkpoints" / "epoch_3.pt", map_location="cpu")["state_dict"]
        assert all(torch.equal(final[k], resumed[k]) for k in final), cut


def test_observe_trains_exactly_as_full_data(one_shard_data, tmp_path):
    """``--selection observe`` scores and records every candidate but trains as ``none`` does;
    ``--selection-scoring-mode train`` scores a BatchNorm tower without touching its statistics
    (a ResNet: the harder case for equal weights)."""
    rn = ["--model", "dissect-rn-tiny"]
    _ok(_train(one_shard_data, tmp_path, "none", "--selection", "none", *rn))
    record = ["--selection-record", str(tmp_path / "rec"), "--selection-scoring-mode", "train"]
    _ok(_train(one_shard_data, tmp_path, "observe", "--selection", "observe", *record, *rn))
    a = torch.load(tmp_path / "none" / "checkpoints" / "epoch_1.pt", map_location="cpu")["state_dict"]
    b = torch.load(tmp_path / "observe" / "checkpoints" / "epoch_1.pt", map_location="cpu")["state_dict"]
    assert any("running_mean" in k for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    frame = pd.read_parquet(tmp_path / "rec" / "epoch_0.rank0-of-1.parquet")
    assert len(frame) == 128 and bool(frame["kept"].all()) and frame["curr"].std() > 0


def test_the_retrieval_detector_watches_val_data_and_reports_the_test_split_apart(tiny_data, tmp_path):
    """``auto`` with the default signal reads the R@sum of --val-data (logged, naming the split),
    while --retrieval-data is only reported; the retrieval split's rare-concept queries get their
    own R@sum."""
    _ok(
        _train(
            tiny_data,
            tmp_path,
            "auto",
            "--selection",
            "dissect-warmup",
            "--dissect-warmup-epochs",
            "auto",
            "--dissect-auto-patience",
            "1",
            "--ratio",
            "0.5",
            "--val-data",
            tiny_data.val,
            "--retrieval-data",
            tiny_data.test,
            "--val-frequency",
            "1",
            "--train-num-samples",
            "128",
            epochs=2,
        )
    )
    with open(tmp_path / "auto" / "out.log") as f:
        log = f.read()
    watched = [line for line in log.splitlines() if "early-learning detector: --val-data R@sum" in line]
    assert len(watched) == 2 and all(tiny_data.val in line for line in watched)
    results = read_jsonl(tmp_path / "auto" / "checkpoints" / "results.jsonl")
    reported = [r for r in results if "retrieval_R@sum" in r]
    assert len(reported) == 2 and all("retrieval_R@sum[rare]" in r for r in reported)
    assert reported[0]["retrieval_images"] == 32  # the test split, not the 64 val pairs
