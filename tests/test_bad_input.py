"""One error contract for every entry point: a bad flag or file gives exit status 2, one line
naming the flag or the file (the last line of stderr), no traceback, and nothing written.

Each case runs ``python -m open_clip_dissect.main`` or the ``open-clip-dissect`` command in a
folder of its own (``forked_entry_points``: a forked copy of a process that has imported torch
and OpenCLIP once, so the table takes seconds, not minutes); the folder must hold exactly what
it held before. Two cases also run in a fresh interpreter, to show that the fork runs them alike.
"""

import os
import shutil
import tarfile

import pandas as pd
import pytest
import torch
from conftest import TINY_TRAIN_FLAGS, run_module

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast

MAIN = "open_clip_dissect.main"
CLI = "open_clip_dissect.cli"


@pytest.fixture(scope="module")
def world(tiny_data, tmp_path_factory):
    """Files the cases point at (never written by them)."""
    root = tmp_path_factory.mktemp("bad-input")
    w = {"data": tiny_data, "root": root}
    shard = os.path.join(tiny_data.root, "train", "00000.tar")
    for name, sizes in (("nosizes", None), ("badsizes", "{"), ("othersizes", '{"other.tar": 3}')):
        (root / name).mkdir()
        shutil.copy(shard, root / name / "00000.tar")
        if sizes is not None:
            (root / name / "sizes.json").write_text(sizes)
    (root / "unparsable.csv").write_text('filepath\ttitle\n"an unterminated quote\tx\n')
    (root / "no_images.csv").write_text("filepath\ttitle\nnowhere/a.png\ta caption\n")
    (root / "empty_keys.txt").write_text("\n")
    (root / "other_keys.txt").write_text("elsewhere/00000.tar/00000001\n")
    (root / "a_file").write_text("not a folder\n")
    (root / "scores.txt").write_text("not parquet\n")
    pd.DataFrame({"key": ["a", "b"], "clipscore": [1.0, 2.0]}).to_parquet(root / "scores.parquet")
    torch.save({"epoch": 1, "state_dict": {"w": torch.zeros(1000)}}, root / "epoch_1.pt")
    payload = (root / "epoch_1.pt").read_bytes()
    (root / "cut.pt").write_bytes(payload[: len(payload) // 2])  # a write killed half-way
    (root / "no_results").mkdir()
    (root / "bad_results" / "checkpoints").mkdir(parents=True)
    (root / "bad_results" / "checkpoints" / "results.jsonl").write_text('{"epoch": 1, \n')
    (root / "embeddings").mkdir()
    (root / "taken" / "run").mkdir(parents=True)  # a run folder in use: a crashed run's, or another's
    (root / "taken" / "run" / "out.log").write_text("epoch 1\n")
    rows = pd.read_csv(tiny_data.train_csv, sep="\t")
    rows.loc[3, "filepath"] = str(root / "gone.png")
    rows.to_csv(root / "missing_image.csv", sep="\t", index=False)
    (root / "bad_eval" / "checkpoints").mkdir(parents=True)
    (root / "bad_eval" / "checkpoints" / "epoch_1.mscoco_captions.json").write_text('{"IR@1": 3.0}')
    (root / "bad_selection" / "checkpoints").mkdir(parents=True)
    recalls = ", ".join(f'"retrieval_{c}": 1.0' for c in ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10", "R@sum"))
    (root / "bad_selection" / "checkpoints" / "results.jsonl").write_text(f'{{"epoch": 1, {recalls}}}\n')
    (root / "bad_selection" / "selection.jsonl").write_text('{"epoch": 1, "kept"\n')
    w.update(
        shard=shard,
        train=tiny_data.train,
        csv=tiny_data.train_csv,
        missing=os.path.join(tiny_data.root, "train", "{00000..00009}.tar"),
    )
    return w


def train(d, *flags):
    """A tiny training command whose run folder is ``d/logs/run``."""
    return [*TINY_TRAIN_FLAGS, "--workers", "1", "--epochs", "1", "--logs", str(d / "logs"), "--name", "run", *flags]


def wds(w, *flags):
    return ["--train-data", w["train"], "--dataset-type", "webdataset", *flags]


def csv(w, *flags):
    return ["--train-data", w["csv"], "--dataset-type", "csv", *flags]


R = "root"  # placeholders resolved per case: a path under the fixture folder ...
D = "case"  # ... or under the case's own folder


# (id, module, argv (w: world, d: the case's folder), what the error line must name)
CASES = [
    # --- python -m open_clip_dissect.main: refused before OpenCLIP creates the run folder
    (
        "shards-missing",
        MAIN,
        lambda w, d: train(d, "--train-data", w["missing"], "--dataset-type", "webdataset"),
        "--train-data: shard not found",
    ),
    ("pattern-unbalanced", MAIN, lambda w, d: train(d, "--train-data", "/x/{0000..0003.tar"), "--train-data"),
    ("type-unknown", MAIN, lambda w, d: train(d, "--train-data", str(w["root"] / "pool.parquet")), "--dataset-type"),
    (
        "csv-missing",
        MAIN,
        lambda w, d: train(d, "--train-data", str(d / "none.csv"), "--dataset-type", "csv"),
        "--train-data: csv file not found",
    ),
    (
        "csv-unparsable",
        MAIN,
        lambda w, d: train(d, "--train-data", str(w["root"] / "unparsable.csv"), "--dataset-type", "csv"),
        lambda w, d: str(w["root"] / "unparsable.csv"),
    ),
    ("csv-image-column", MAIN, lambda w, d: train(d, *csv(w, "--csv-img-key", "image")), "--csv-img-key"),
    ("csv-caption-column", MAIN, lambda w, d: train(d, *csv(w, "--csv-caption-key", "caption")), "--csv-caption-key"),
    ("csv-key-column", MAIN, lambda w, d: train(d, *csv(w, "--csv-key-key", "uid")), "--csv-key-key"),
    (
        "sizes-missing",
        MAIN,
        lambda w, d: train(d, "--train-data", str(w["root"] / "nosizes" / "00000.tar"), "--dataset-type", "webdataset"),
        "--train-num-samples",
    ),
    (
        "sizes-unreadable",
        MAIN,
        lambda w, d: train(
            d, "--train-data", str(w["root"] / "badsizes" / "00000.tar"), "--dataset-type", "webdataset"
        ),
        lambda w, d: str(w["root"] / "badsizes" / "sizes.json"),
    ),
    (
        "sizes-lack-shard",
        MAIN,
        lambda w, d: train(
            d, "--train-data", str(w["root"] / "othersizes" / "00000.tar"), "--dataset-type", "webdataset"
        ),
        lambda w, d: str(w["root"] / "othersizes" / "sizes.json"),
    ),
    ("workers-exceed-shards", MAIN, lambda w, d: train(d, *wds(w, "--workers", "8")), "--workers"),
    (
        "upsampling-unresampled",
        MAIN,
        lambda w, d: train(d, *wds(w, "--train-data-upsampling-factors", "1")),
        "--train-data-upsampling-factors",
    ),
    (
        "upsampling-count",
        MAIN,
        lambda w, d: train(
            d,
            "--train-data",
            f"{w['train']}::{w['train']}",
            "--dataset-type",
            "webdataset",
            "--dataset-resampled",
            "--train-data-upsampling-factors",
            "1::2::3",
        ),
        "--train-data-upsampling-factors",
    ),
    ("val-shards-missing", MAIN, lambda w, d: train(d, *wds(w, "--val-data", w["missing"])), "--val-data"),
    (
        "retrieval-csv-missing",
        MAIN,
        lambda w, d: train(d, *wds(w, "--retrieval-data", str(d / "test.csv"))),
        "--retrieval-data: csv file not found",
    ),
    (
        "retrieval-images-missing",
        MAIN,
        lambda w, d: train(d, *wds(w, "--retrieval-data", str(w["root"] / "no_images.csv"))),
        lambda w, d: str(w["root"] / "no_images.csv"),
    ),
    ("keep-list-missing", MAIN, lambda w, d: train(d, *wds(w, "--keep-list", str(d / "keys.txt"))), "--keep-list"),
    ("keep-list-binary", MAIN, lambda w, d: train(d, *wds(w, "--keep-list", str(w["root"] / "cut.pt"))), "--keep-list"),
    (
        "noisy-keys-binary",
        MAIN,
        lambda w, d: train(d, *wds(w, "--noisy-keys", str(w["root"] / "cut.pt"))),
        "--noisy-keys",
    ),
    (
        "keep-list-empty",
        MAIN,
        lambda w, d: train(d, *wds(w, "--keep-list", str(w["root"] / "empty_keys.txt"))),
        "--keep-list",
    ),
    (
        "keep-list-names-no-shard",
        MAIN,
        lambda w, d: train(d, *wds(w, "--keep-list", str(w["root"] / "other_keys.txt"))),
        "--keep-list",
    ),
    (
        "keep-list-names-no-row",
        MAIN,
        lambda w, d: train(d, *csv(w, "--keep-list", str(w["root"] / "other_keys.txt"))),
        "--keep-list",
    ),
    (
        "keep-list-synthetic",
        MAIN,
        lambda w, d: train(
            d,
            "--dataset-type",
            "synthetic",
            "--train-num-samples",
            "64",
            "--keep-list",
            str(w["root"] / "other_keys.txt"),
        ),
        "--keep-list",
    ),
    ("resume-missing", MAIN, lambda w, d: train(d, *wds(w, "--resume", str(d / "epoch_3.pt"))), "--resume"),
    (
        "resume-truncated",
        MAIN,
        lambda w, d: train(d, *wds(w, "--resume", str(w["root"] / "cut.pt"))),
        lambda w, d: f"--resume: {w['root'] / 'cut.pt'}",
    ),
    ("model-unknown", MAIN, lambda w, d: train(d, *wds(w, "--model", "dissect-vit-tny")), "--model"),
    ("pretrained-unknown", MAIN, lambda w, d: train(d, *wds(w, "--pretrained", "laion9000")), "--pretrained"),
    ("ratio", MAIN, lambda w, d: train(d, *wds(w, "--selection", "random", "--ratio", "0")), "--ratio"),
    (
        "batch-keeps-one-pair",  # k = max(1, round(0.3 x 1)) = 1: no negative, loss 0, nothing learned
        MAIN,
        lambda w, d: train(d, *wds(w, "--selection", "random", "--batch-size", "1", "--ratio", "0.3")),
        "--batch-size: 1 with --ratio 0.3 keeps 1 pair a step",
    ),
    (
        "train-num-samples-beyond-the-data",
        MAIN,
        lambda w, d: train(d, *wds(w, "--train-num-samples", "5000")),
        "--train-num-samples: 5000 is more than the 512 samples of --train-data",
    ),
    (
        "name-in-use",
        MAIN,
        lambda w, d: train(d, *wds(w, "--logs", str(w["root"] / "taken"))),
        lambda w, d: f"--name: {w['root'] / 'taken' / 'run'} already holds a run",
    ),
    (
        "csv-image-missing",
        MAIN,
        lambda w, d: train(d, "--train-data", str(w["root"] / "missing_image.csv"), "--dataset-type", "csv"),
        lambda w, d: f"{w['root'] / 'missing_image.csv'}: row 3: image not found: {w['root'] / 'gone.png'}",
    ),
    (
        "val-data-folder",
        MAIN,
        lambda w, d: train(d, *wds(w, "--val-data", str(w["root"] / "embeddings"))),
        lambda w, d: f"--val-data: {w['root'] / 'embeddings'} is a directory",
    ),
    (
        "auto-warmup-without-val-data",
        MAIN,
        lambda w, d: train(d, *wds(w, "--selection", "dissect-warmup", "--dissect-warmup-epochs", "auto")),
        "--val-data: needed for --selection dissect-warmup",
    ),
    ("noisy-keys-missing", MAIN, lambda w, d: train(d, *wds(w, "--noisy-keys", str(d / "noisy.txt"))), "--noisy-keys"),
    ("oracle-missing", MAIN, lambda w, d: train(d, *wds(w, "--selection", "clipscore-oracle")), "--selection"),
    (
        "oracle-model-unknown",
        MAIN,
        lambda w, d: train(
            d,
            *wds(
                w,
                "--selection",
                "clipscore-oracle",
                "--oracle-model",
                "nope",
                "--oracle-checkpoint",
                str(w["root"] / "epoch_1.pt"),
            ),
        ),
        "--oracle-model",
    ),
    # --- open-clip-dissect train: the same entry point
    ("train-shards-missing", CLI, lambda w, d: ["train", *train(d, "--train-data", w["missing"])], "--train-data"),
    (
        "train-resume-truncated",
        CLI,
        lambda w, d: ["train", *train(d, *wds(w, "--resume", str(w["root"] / "cut.pt")))],
        "--resume",
    ),
    # --- make-data
    (
        "make-data-noise-rate",
        CLI,
        lambda w, d: ["make-data", "--out", str(d / "out"), "--noise-rate", "2"],
        "--noise-rate",
    ),
    (
        "make-data-layout-format",
        CLI,
        lambda w, d: [
            "make-data",
            "--out",
            str(d / "out"),
            "--test-size",
            "2",
            "--coco-layout",
            str(d / "coco"),
            "--image-format",
            "png",
        ],
        "--image-format",
    ),
    (
        "make-data-shard-size",
        CLI,
        lambda w, d: ["make-data", "--out", str(d / "out"), "--shard-size", "0"],
        "--shard-size",
    ),
    ("make-data-size", CLI, lambda w, d: ["make-data", "--out", str(d / "out"), "--train-size", "-5"], "--train-size"),
    (
        "make-data-out-file",
        CLI,
        lambda w, d: ["make-data", "--out", str(w["root"] / "a_file"), "--train-size", "4"],
        "--out",
    ),
    (
        "make-data-openclipart-from-missing",
        CLI,
        lambda w, d: ["make-data", "--source", "openclipart", "--out", str(d / "out"), "--from", str(d / "nowhere")],
        "--from",
    ),
    (
        "make-data-openclipart-synthetic-flag",
        CLI,
        lambda w, d: ["make-data", "--source", "openclipart", "--out", str(d / "out"), "--train-size", "10"],
        "--train-size",
    ),
    (
        "make-data-from-without-openclipart",
        CLI,
        lambda w, d: ["make-data", "--out", str(d / "out"), "--from", str(w["root"])],
        "--from",
    ),
    # --- summary
    (
        "summary-no-folder",
        CLI,
        lambda w, d: ["summary", str(d / "logs" / "nothing")],
        lambda w, d: str(d / "logs" / "nothing"),
    ),
    (
        "summary-no-results",
        CLI,
        lambda w, d: ["summary", str(w["root"] / "no_results")],
        lambda w, d: str(w["root"] / "no_results" / "checkpoints" / "results.jsonl"),
    ),
    (
        "summary-bad-results",
        CLI,
        lambda w, d: ["summary", str(w["root"] / "bad_results")],
        lambda w, d: str(w["root"] / "bad_results" / "checkpoints" / "results.jsonl"),
    ),
    (
        "summary-table-bad-results",
        CLI,
        lambda w, d: ["summary", "--table", str(w["root"] / "bad_results"), str(w["root"] / "no_results")],
        lambda w, d: str(w["root"] / "bad_results" / "checkpoints" / "results.jsonl"),
    ),
    (
        "summary-table-eval-json-without-metrics",
        CLI,
        lambda w, d: ["summary", "--table", str(w["root"] / "bad_eval")],
        lambda w, d: f"{w['root'] / 'bad_eval' / 'checkpoints' / 'epoch_1.mscoco_captions.json'}: not an `eval",
    ),
    (
        "summary-bad-selection-record",
        CLI,
        lambda w, d: ["summary", str(w["root"] / "bad_selection")],
        lambda w, d: f"{w['root'] / 'bad_selection' / 'selection.jsonl'}: line 1 is not JSON",
    ),
    (
        "summary-table-no-folder",
        CLI,
        lambda w, d: ["summary", "--table", str(d / "a"), str(d / "b")],
        lambda w, d: str(d / "a"),
    ),
    # --- eval
    (
        "eval-checkpoint-missing",
        CLI,
        lambda w, d: [
            "eval",
            "--model",
            "dissect-vit-tiny",
            "--data",
            w["data"].test,
            "--checkpoint",
            str(d / "none.pt"),
            "--out",
            str(d / "m.json"),
        ],
        "--checkpoint",
    ),
    (
        "eval-data-missing",
        CLI,
        lambda w, d: ["eval", "--model", "dissect-vit-tiny", "--data", str(d / "test.csv"), "--out", str(d / "m.json")],
        "--data: csv file not found",
    ),
    (
        "eval-shards-missing",
        CLI,
        lambda w, d: ["eval", "--model", "dissect-vit-tiny", "--data", w["missing"]],
        "--data: shard not found",
    ),
    ("eval-model-unknown", CLI, lambda w, d: ["eval", "--model", "ViT-Q-99", "--data", w["data"].test], "--model"),
    (
        "eval-out-folder",
        CLI,
        lambda w, d: ["eval", "--model", "dissect-vit-tiny", "--data", w["data"].test, "--out", str(w["root"])],
        "--out",
    ),
    # --- embed
    (
        "embed-data-missing",
        CLI,
        lambda w, d: ["embed", "--model", "dissect-vit-tiny", "--data", str(d / "x.csv"), "--out", str(d / "emb")],
        "--data: csv file not found",
    ),
    (
        "embed-checkpoint-missing",
        CLI,
        lambda w, d: [
            "embed",
            "--model",
            "dissect-vit-tiny",
            "--data",
            w["train"],
            "--checkpoint",
            str(d / "none.pt"),
            "--out",
            str(d / "emb"),
        ],
        "--checkpoint",
    ),
    (
        "embed-key-column",
        CLI,
        lambda w, d: [
            "embed",
            "--model",
            "dissect-vit-tiny",
            "--data",
            w["csv"],
            "--csv-key-key",
            "uid",
            "--out",
            str(d / "emb"),
        ],
        "--csv-key-key",
    ),
    (
        "embed-out-file",
        CLI,
        lambda w, d: ["embed", "--model", "dissect-vit-tiny", "--data", w["train"], "--out", str(w["root"] / "a_file")],
        "--out",
    ),
    # --- score
    (
        "score-forgetting-record",
        CLI,
        lambda w, d: [
            "score",
            "--embeddings",
            str(w["root"] / "embeddings"),
            "--scores",
            "forgetting",
            "--out",
            str(d / "s.parquet"),
        ],
        "--selection-record",
    ),
    (
        "score-no-embeddings",
        CLI,
        lambda w, d: [
            "score",
            "--embeddings",
            str(w["root"] / "embeddings"),
            "--scores",
            "clipscore",
            "--out",
            str(d / "s.parquet"),
        ],
        "--embeddings",
    ),
    (
        "score-negcliploss-batch",
        CLI,
        lambda w, d: [
            "score",
            "--embeddings",
            str(w["root"] / "embeddings"),
            "--scores",
            "negcliploss",
            "--negcliploss-batch-size",
            "1",
            "--out",
            str(d / "s.parquet"),
        ],
        "--negcliploss-batch-size",
    ),
    (
        "score-vas-d-fraction",
        CLI,
        lambda w, d: [
            "score",
            "--embeddings",
            str(w["root"] / "embeddings"),
            "--scores",
            "vas-d",
            "--vas-d-fraction",
            "0",
            "--out",
            str(d / "s.parquet"),
        ],
        "--vas-d-fraction",
    ),
    (
        "score-target-needed",
        CLI,
        lambda w, d: [
            "score",
            "--embeddings",
            str(w["root"] / "embeddings"),
            "--scores",
            "normsim2",
            "--out",
            str(d / "s.parquet"),
        ],
        "--target",
    ),
    # --- filter
    (
        "filter-scores-missing",
        CLI,
        lambda w, d: ["filter", "--scores", str(d / "s.parquet"), "--keep", "clipscore:0.5", "--out", str(d / "kept")],
        "--scores",
    ),
    (
        "filter-scores-not-parquet",
        CLI,
        lambda w, d: [
            "filter",
            "--scores",
            str(w["root"] / "scores.txt"),
            "--keep",
            "clipscore:0.5",
            "--out",
            str(d / "kept"),
        ],
        lambda w, d: str(w["root"] / "scores.txt"),
    ),
    (
        "filter-rule",
        CLI,
        lambda w, d: [
            "filter",
            "--scores",
            str(w["root"] / "scores.parquet"),
            "--keep",
            "clipscore",
            "--out",
            str(d / "kept"),
        ],
        "--keep",
    ),
    (
        "filter-out-file",
        CLI,
        lambda w, d: [
            "filter",
            "--scores",
            str(w["root"] / "scores.parquet"),
            "--keep",
            "clipscore:0.5",
            "--out",
            str(w["root"] / "a_file"),
        ],
        "--out",
    ),
    # --- the command itself
    ("unknown-command", CLI, lambda w, d: ["trian", "--epochs", "1"], "unknown command 'trian'"),
]


def files_under(folder):
    return sorted(
        os.path.relpath(os.path.join(top, name), folder)
        for top, dirs, names in os.walk(folder)
        for name in dirs + names
    )


def assert_refused(result, subject):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines and "error: " in lines[-1] and subject in lines[-1], result.stderr[-3000:]


def test_the_table_covers_every_entry_point(world, tmp_path):
    commands = {argv(world, tmp_path)[0] for _, module, argv, _ in CASES if module == CLI}
    assert len(CASES) >= 25 and len({case[0] for case in CASES}) == len(CASES)
    assert {"train", "make-data", "summary", "eval", "embed", "score", "filter"} <= commands
    assert any(module == MAIN for _, module, _, _ in CASES)


@pytest.mark.parametrize("case_id, module, argv, subject", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_refused_in_one_line_and_leaves_nothing(case_id, module, argv, subject, world, tmp_path):
    before = files_under(world["root"])
    subject = subject(world, tmp_path) if callable(subject) else subject
    result = run_module(module, argv(world, tmp_path), cwd=tmp_path)  # in a fork of the session's server
    assert_refused(result, subject)
    assert files_under(tmp_path) == [], f"left behind: {files_under(tmp_path)}"
    assert files_under(world["root"]) == before


@pytest.mark.parametrize("case_id", ["shards-missing", "embed-data-missing"])
def test_a_fresh_interpreter_gives_the_same_result(case_id, world, tmp_path):
    _, module, argv, subject = next(case for case in CASES if case[0] == case_id)
    result = run_module(module, argv(world, tmp_path), cwd=tmp_path, fresh=True)
    assert_refused(result, subject)
    assert files_under(tmp_path) == []


def test_a_bug_still_gives_a_traceback(monkeypatch):
    """Only ``InputError`` becomes a one-line message; any other exception is a bug and propagates
    (the interpreter prints its traceback)."""
    import open_clip_train.main as upstream_main

    from open_clip_dissect import cli
    from open_clip_dissect.openclip.launch import main as train_main

    def bug(*args):
        raise KeyError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "summary", (bug, "summary"))
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["summary", "somewhere"])
    monkeypatch.setattr(upstream_main, "main", bug)
    with pytest.raises(KeyError, match="a bug"):
        train_main.main(["--epochs", "1"])


# --- failures after OpenCLIP's start-up (issue 26, section 6)


def test_an_epoch_without_samples_names_its_cause_and_the_retry_runs(world, tmp_path):
    # Keys checked only while reading (bare __key__s): none of them is in the data.
    (tmp_path / "keys.txt").write_text("99999998\n99999999\n")
    flags = wds(world, "--sample-key", "key", "--selection", "random", "--keep-list", str(tmp_path / "keys.txt"))
    failed = run_module(MAIN, train(tmp_path, *flags), cwd=tmp_path)
    assert_refused(failed, "--keep-list: the epoch has no samples: none of the 512 samples")
    run = tmp_path / "logs" / "run"
    [aside] = os.listdir(run)  # the failed attempt's files, kept, out of the way of the retry
    assert aside.startswith("failed-") and {"out.log", "params.txt"} <= set(os.listdir(run / aside))
    assert f"its files are now in {run / aside}" in failed.stderr
    # The same command with the keep-list corrected runs in the same folder.
    (tmp_path / "keys.txt").write_text("".join(f"{i:08d}\n" for i in range(64)))
    retry = run_module(MAIN, train(tmp_path, *flags), cwd=tmp_path)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert (run / "checkpoints" / "epoch_1.pt").is_file() and (run / aside / "out.log").is_file()


@pytest.mark.parametrize("selection", ["none", "random"])
def test_unreadable_shards_give_an_epoch_without_samples(selection, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for name in ("00000.tar", "00001.tar"):  # e.g. an HTML error page saved by a failed download
        (shards / name).write_bytes(b"<html>503 Service Unavailable</html>\n" * 40)
    (shards / "sizes.json").write_text('{"00000.tar": 64, "00001.tar": 64}')
    flags = [
        "--train-data",
        str(shards / "{00000..00001}.tar"),
        "--dataset-type",
        "webdataset",
        "--selection",
        selection,
    ]
    result = run_module(MAIN, train(tmp_path, *flags), cwd=tmp_path)
    assert_refused(
        result, "--train-data: the epoch has no samples: none of the 2 shard(s) of --train-data holds a readable sample"
    )
    assert not os.path.exists(tmp_path / "logs" / "run" / "checkpoints")  # moved aside with the log


def test_empty_shards_are_named_as_empty(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w"):  # a tar with no member: no warning was logged
        pass
    (shards / "sizes.json").write_text('{"00000.tar": 64}')
    flags = ["--train-data", str(shards / "00000.tar"), "--dataset-type", "webdataset", "--selection", "random"]
    result = run_module(MAIN, train(tmp_path, *flags), cwd=tmp_path)
    assert_refused(result, "--train-data: the epoch has no samples: none of the 1 shard(s) of --train-data holds a")
    assert "the tar files are empty" in result.stderr and "see the warnings above" not in result.stderr


def test_a_failed_run_with_a_checkpoint_is_left_for_resume(tmp_path):
    from types import SimpleNamespace

    from open_clip_dissect.openclip.launch.run_attempt import set_failed_attempt_aside

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "out.log").write_text("epoch 1\n")
    (run / "checkpoints" / "epoch_1.pt").write_bytes(b"weights")
    args = SimpleNamespace(log_path=str(run / "out.log"), rank=0)
    assert set_failed_attempt_aside(args) is None  # --resume latest continues this run
    assert sorted(os.listdir(run)) == ["checkpoints", "out.log"]
    assert set_failed_attempt_aside(SimpleNamespace(log_path=None, rank=0)) is None  # failed before the folder
    os.remove(run / "checkpoints" / "epoch_1.pt")
    first = set_failed_attempt_aside(args)
    (run / "out.log").write_text("attempt 2\n")
    second = set_failed_attempt_aside(args)  # two failures in the same second: two folders
    assert first != second and sorted(os.listdir(run)) == sorted(os.path.basename(p) for p in (first, second))
    assert (run / os.path.basename(second) / "out.log").read_text() == "attempt 2\n"
