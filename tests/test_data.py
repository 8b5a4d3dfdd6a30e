"""Key-carrying training loaders for webdataset, csv and synthetic data sets."""

import io
import json
import logging
import os
import tarfile

import open_clip
import open_clip_train.data as upstream_data
import pandas as pd
import pytest
import torch
from conftest import TINY, run_module
from webdataset.tariterators import tar_file_expander, url_opener

from open_clip_dissect.core.history import hash_keys
from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.launch import params
from open_clip_dissect.openclip.pipeline import keyed_data as data


def _args(*argv, **overrides):
    args = params.parse_args(["--model", TINY, "--batch-size", "32", "--workers", "0", "--precision", "fp32", *argv])
    args.world_size, args.rank, args.distributed = 1, 0, False
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


def _train_loader(args, epoch=0):
    preprocess = open_clip.image_transform(32, is_train=True)
    tokenizer = open_clip.get_tokenizer(TINY)
    info = data.get_data(args, (preprocess, preprocess), epoch=epoch, tokenizer=tokenizer)["train"]
    info.set_epoch(epoch)
    return info.dataloader


def _batches(loader):
    for images, texts, keys, hashes, noisy in loader:
        assert images.shape[1:] == (3, 32, 32) and texts.shape == (len(keys), 32)
        assert torch.equal(hashes, hash_keys(keys))  # hashed in the loader workers
        assert all(isinstance(k, str) for k in keys) and noisy.shape == (len(keys),)
        yield keys, noisy.tolist()


def _keys(loader):
    return [k for keys, _ in _batches(loader) for k in keys]


def _labels(loader):
    return {k: n for keys, noisy in _batches(loader) for k, n in zip(keys, noisy)}


def test_webdataset_batches_carry_url_and_key(tiny_data):
    loader = _train_loader(_args("--train-data", tiny_data.train, "--dataset-type", "webdataset"))
    keys = _keys(loader)
    assert loader.num_batches == 16 and len(keys) == 512
    assert len(set(keys)) == 512  # one pass over 4 shards sees every sample once
    shard, key = keys[0].rsplit("/", 1)
    frame = pd.read_csv(tiny_data.train_csv, sep="\t", dtype={"key": str})
    truth = dict(zip(frame.key, frame.noisy.astype(int)))
    labels = {k.rsplit("/", 1)[1]: n for k, n in _labels(loader).items()}
    assert labels == truth and sum(truth.values()) == tiny_data.manifest["splits"]["train"]["num_noisy"]
    assert shard.startswith(os.path.join(tiny_data.root, "train")) and shard.endswith(".tar")
    assert len(key) == 8 and key.isdigit()


def test_bare_key_mode(tiny_data):
    args = _args("--train-data", tiny_data.train, "--dataset-type", "webdataset", "--sample-key", "key")
    assert set(_keys(_train_loader(args))) == {f"{i:08d}" for i in range(512)}


def test_sample_order_is_a_function_of_seed_and_epoch(tiny_data):
    def order(seed, epoch, resampled=False):
        flags = ["--train-data", tiny_data.train, "--dataset-type", "webdataset", "--seed", str(seed)]
        if resampled:
            flags.append("--dataset-resampled")
        return _keys(_train_loader(_args(*flags), epoch=epoch))

    first, resampled = order(0, 0), order(0, 2, resampled=True)
    assert first == order(0, 0) and first != order(0, 1) and first != order(1, 0)
    assert resampled == order(0, 2, resampled=True) and resampled != order(0, 3, resampled=True)


def test_upsampling_factors_still_work(tiny_data):
    two = f"{tiny_data.train}::{tiny_data.train}"
    args = _args(
        "--train-data",
        two,
        "--dataset-type",
        "webdataset",
        "--dataset-resampled",
        "--train-data-upsampling-factors",
        "1::3",
    )
    assert len(_keys(_train_loader(args))) == 1024  # sizes.json counts both sources
    with pytest.raises(InputError, match="--dataset-resampled"):
        _train_loader(
            _args("--train-data", two, "--dataset-type", "webdataset", "--train-data-upsampling-factors", "1::3")
        )


def _write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def _png():
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def test_end_of_shard_marker_separates_shards(tmp_path):
    # The last sample of shard a and the first of shard b share a key: grouping across the
    # shard boundary would merge them into one sample.
    a, b = str(tmp_path / "a.tar"), str(tmp_path / "b.tar")
    _write_tar(a, [("k1.png", _png()), ("k1.txt", b"one"), ("k2.png", _png())])
    _write_tar(b, [("k2.txt", b"two"), ("k3.png", _png()), ("k3.txt", b"three")])
    files = list(tar_file_expander(url_opener([{"url": a}, {"url": b}])))
    assert {} in files  # webdataset >= 1.0 marks every shard's end
    with pytest.raises(KeyError, match="fname"):  # the upstream bug (open_clip_torch 3.3.0)
        list(upstream_data.group_by_keys_nothrow(iter(files)))
    samples = list(data.group_by_keys_nothrow(iter(files)))
    assert [(s["__key__"], sorted(k for k in s if not k.startswith("__"))) for s in samples] == [
        ("k1", ["png", "txt"]),
        ("k2", ["png"]),
        ("k2", ["txt"]),
        ("k3", ["png", "txt"]),
    ]
    assert [s["__url__"] for s in samples] == [a, a, b, b]


def test_bad_samples_are_skipped_and_named(tmp_path, caplog):
    shard = str(tmp_path / "bad.tar")
    _write_tar(
        shard,
        [
            ("ok.png", _png()),
            ("ok.txt", b"a red square"),
            ("nocap.png", _png()),
            ("broken.png", b"not a png"),
            ("broken.txt", b"a blue circle"),
        ],
    )
    with open(tmp_path / "sizes.json", "w") as f:
        json.dump({"bad.tar": 3}, f)
    args = _args("--train-data", shard, "--dataset-type", "webdataset", batch_size=1)
    with caplog.at_level(logging.WARNING):
        keys = _keys(_train_loader(args))
    assert set(keys) == {f"{shard}/ok"}
    text = caplog.text
    assert f"Skipping sample nocap in {shard}" in text and "caption" in text
    assert f"Skipping sample broken in {shard}" in text and "decode" in text


def test_corrupt_shard_is_named(tmp_path, caplog):
    good, bad = str(tmp_path / "good.tar"), str(tmp_path / "bad.tar")
    _write_tar(good, [("a.png", _png()), ("a.txt", b"x"), ("b.png", b"y" * 3000), ("b.txt", b"y")])
    with open(good, "rb") as f:
        payload = f.read()
    with open(bad, "wb") as f:  # cut inside b.png
        f.write(payload[:3500])
    with caplog.at_level(logging.WARNING):
        samples = list(data.tarfile_to_samples_nothrow([{"url": bad}, {"url": good}]))
    assert [s["__key__"] for s in samples] == ["a", "a", "b"]  # the good shard is read in full
    assert f"Skipping the rest of shard {bad}" in caplog.text


@pytest.mark.parametrize("cut", ["member boundary", "inside a header"])
def test_shard_cut_between_members_is_named(tmp_path, caplog, cut):
    # tarfile's stream reader ends silently when the data stops between two members (or in a
    # header): without the end-of-archive blocks the shard is truncated, not shorter.
    good, bad = str(tmp_path / "good.tar"), str(tmp_path / "bad.tar")
    _write_tar(good, [("a.png", _png()), ("a.txt", b"x"), ("b.png", _png()), ("b.txt", b"y")])
    with tarfile.open(good) as tar:
        b_header = tar.getmember("b.png").offset
    with open(good, "rb") as f:
        payload = f.read()
    with open(bad, "wb") as f:
        f.write(payload[:b_header] if cut == "member boundary" else payload[: b_header + 100])
    with caplog.at_level(logging.WARNING):
        samples = list(data.tarfile_to_samples_nothrow([{"url": bad}, {"url": good}]))
    assert [s["__key__"] for s in samples] == ["a", "a", "b"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"Shard {bad} is truncated: it ends after 2 members without tar's end-of-archive "
        f"blocks; reading the samples before the cut"
    ]  # none for the complete shard


def test_missing_shard_is_named(tiny_data):
    pattern = os.path.join(tiny_data.root, "train", "{00000..00009}.tar")
    with pytest.raises(InputError, match=r"--train-data: shard not found: .*00004.tar \(and 5 more\)"):
        _train_loader(_args("--train-data", pattern, "--dataset-type", "webdataset"))


def test_csv_keys_row_index_and_column(tiny_data):
    keys = _keys(_train_loader(_args("--train-data", tiny_data.train_csv, "--dataset-type", "csv")))
    assert sorted(keys, key=int) == [str(i) for i in range(512)]
    loader = _train_loader(_args("--train-data", tiny_data.train_csv, "--dataset-type", "csv", "--csv-key-key", "key"))
    labels = _labels(loader)
    assert sorted(labels) == [f"{i:08d}" for i in range(512)]
    assert sum(labels.values()) == tiny_data.manifest["splits"]["train"]["num_noisy"]


def test_csv_bad_columns_fail_before_training(tiny_data, tmp_path):
    with pytest.raises(InputError, match="--csv-key-key: column 'uid' not in"):
        _train_loader(_args("--train-data", tiny_data.train_csv, "--dataset-type", "csv", "--csv-key-key", "uid"))
    with pytest.raises(InputError, match="--csv-caption-key"):
        _train_loader(
            _args("--train-data", tiny_data.train_csv, "--dataset-type", "csv", "--csv-caption-key", "caption")
        )
    with pytest.raises(InputError, match="--train-data: csv file not found"):
        _train_loader(_args("--train-data", str(tmp_path / "none.csv"), "--dataset-type", "csv"))


def test_synthetic_type_carries_index(tiny_data):
    labels = _labels(_train_loader(_args("--dataset-type", "synthetic", "--train-num-samples", "64")))
    assert sorted(labels, key=int) == [str(i) for i in range(64)] and set(labels.values()) == {-1}


def test_validation_loader_is_upstreams(tiny_data):
    preprocess = open_clip.image_transform(32, is_train=False)
    args = _args("--train-data", tiny_data.train, "--val-data", tiny_data.val, "--dataset-type", "webdataset")
    val = data.get_data(args, (preprocess, preprocess), tokenizer=open_clip.get_tokenizer(TINY))["val"]
    batches = list(val.dataloader)
    assert all(len(b) == 2 for b in batches) and sum(len(b[0]) for b in batches) == 64


def test_keep_list_restricts_training_stream(tiny_data, tmp_path):
    kept = [f"{tiny_data.root}/train/0000{i // 128}.tar/{i:08d}" for i in range(0, 512, 3)]  # 171 keys
    (tmp_path / "keys.txt").write_text("\n".join(kept) + "\n")
    loader = _train_loader(
        _args("--train-data", tiny_data.train, "--dataset-type", "webdataset", "--keep-list", str(tmp_path))
    )
    assert loader.num_samples == 192  # 171 samples rounded up to whole batches of 32
    keys = _keys(loader)
    assert len(keys) == 192 and set(keys) <= set(kept)  # only listed samples
    assert len(set(keys)) >= 160  # a full pass over the list (the rest of the epoch repeats some)
    rows = [str(i) for i in range(0, 512, 3)]
    (tmp_path / "rows.txt").write_text("\n".join(rows))
    csv_keys = _keys(
        _train_loader(
            _args(
                "--train-data", tiny_data.train_csv, "--dataset-type", "csv", "--keep-list", str(tmp_path / "rows.txt")
            )
        )
    )
    assert set(csv_keys) <= set(rows) and len(csv_keys) == 160  # 171 rows, whole batches of 32


# Reads the shards of argv[1] with the keep-list argv[2] (model argv[3]) through the training pipeline, its one
# loader worker started with ``spawn``. (The guard: a spawned worker imports this module again.)
SPAWNED_LOADER = """
import multiprocessing
import sys

import open_clip

from open_clip_dissect.openclip.launch import params
from open_clip_dissect.openclip.models.configs import register_model_configs
from open_clip_dissect.openclip.pipeline import keyed_data

if __name__ == "__main__":
    multiprocessing.set_start_method("spawn", force=True)
    register_model_configs()
    args = params.parse_args(["--model", sys.argv[3], "--batch-size", "32", "--workers", "1",
                              "--precision", "fp32", "--train-data", sys.argv[1], "--dataset-type", "webdataset",
                              "--keep-list", sys.argv[2]])
    args.world_size, args.rank, args.distributed = 1, 0, False
    preprocess = open_clip.image_transform(32, is_train=True)
    tokenizer = open_clip.get_tokenizer(sys.argv[3])
    info = keyed_data.get_data(args, (preprocess, preprocess), tokenizer=tokenizer)["train"]
    info.set_epoch(0)
    print(sorted(k.rsplit("/", 1)[1] for batch in info.dataloader for k in batch[2]))
"""


@pytest.mark.slow  # a spawned worker imports torch
def test_the_training_pipeline_runs_in_spawned_workers(tiny_data, tmp_path):
    # Every stage handed to the loader workers must pickle: with the ``spawn`` start method
    # (macOS and Windows' default, and an option on Linux) a closure or lambda fails here.
    listed = [f"{i:08d}" for i in range(0, 512, 2)]
    keys = sorted(
        k for k in _keys(_train_loader(_args("--train-data", tiny_data.train, "--dataset-type", "webdataset")))
    )
    keep = [k for k in keys if k.rsplit("/", 1)[1] in set(listed)]
    with open(tmp_path / "keep.txt", "w") as f:
        f.write("\n".join(keep) + "\n")
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "spawned_loader.py").write_text(SPAWNED_LOADER)  # (run in a fork of the tests' server)
    keep_list = str(tmp_path / "keep.txt")
    out = run_module("spawned_loader", [tiny_data.train, keep_list, TINY], env={"PYTHONPATH": str(probe)}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    read = json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))
    assert len(read) == 256 and set(read) == set(listed)  # every shard read, the keep-list applied
