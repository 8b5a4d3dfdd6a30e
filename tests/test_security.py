"""No code runs from data: shards, selection-state files and checkpoints carrying a pickle
payload are read without unpickling it. Each payload would create a sentinel file when
unpickled; every test first shows that it does (so the test can fail), then that our readers
never trigger it."""

import io
import os
import pickle
import shutil
import subprocess
import tarfile

import open_clip
import open_clip_train.data as upstream_data
import pytest
import torch
from conftest import REPO, TINY, TINY_TRAIN_FLAGS, run_module, train_losses

from open_clip_dissect.errors import InputError
from open_clip_dissect.offline import embeddings
from open_clip_dissect.openclip.evaluation import retrieval
from open_clip_dissect.openclip.launch import params
from open_clip_dissect.openclip.models.frozen import load_frozen_model
from open_clip_dissect.openclip.pipeline import keyed_data as data
from open_clip_dissect.openclip.pipeline.shard_members import decode_sample
from open_clip_dissect.openclip.state import state_files as selection

EXTRA_MEMBERS = ("pyd", "pkl", "pickle", "pth", "npy")


class Payload:
    """Unpickling this runs ``touch <sentinel>``."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return os.system, (f"touch '{self.sentinel}'",)


def payload_bytes(sentinel, kind="pyd") -> bytes:
    if kind == "pth":
        buffer = io.BytesIO()
        torch.save({"x": Payload(sentinel)}, buffer)
        return buffer.getvalue()
    return pickle.dumps(Payload(sentinel))


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "payload-ran"
    pickle.loads(payload_bytes(path))  # the payload is live: unpickling it runs the command
    assert path.exists()
    path.unlink()
    return path


def tamper_shard(src, dst, sentinel):
    """Copy a webdataset shard, adding pickled members to every sample after its own members."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        members = [m for m in tin.getmembers() if m.isfile()]
        for i, member in enumerate(members):
            tout.addfile(member, tin.extractfile(member))
            prefix = member.name.split(".", 1)[0]
            if i + 1 == len(members) or members[i + 1].name.split(".", 1)[0] != prefix:
                for ext in EXTRA_MEMBERS:
                    payload = payload_bytes(sentinel, ext)
                    info = tarfile.TarInfo(f"{prefix}.{ext}")
                    info.size = len(payload)
                    tout.addfile(info, io.BytesIO(payload))


def tamper_split(pattern, dst_dir, sentinel):
    """Tampered copies of every shard of a split (plus its sizes.json); the new brace pattern."""
    src_dir = os.path.dirname(pattern)
    os.makedirs(dst_dir, exist_ok=True)
    for name in os.listdir(src_dir):
        if name.endswith(".tar"):
            tamper_shard(os.path.join(src_dir, name), os.path.join(dst_dir, name), sentinel)
        elif name == "sizes.json":
            shutil.copy(os.path.join(src_dir, name), dst_dir)
    return os.path.join(str(dst_dir), os.path.basename(pattern))


def _args(*argv):
    args = params.parse_args(
        ["--model", TINY, "--batch-size", "32", "--workers", "0", "--precision", "fp32", "--sample-key", "key", *argv]
    )
    args.world_size, args.rank, args.distributed = 1, 0, False
    return args


def _loaders(args):
    preprocess = open_clip.image_transform(32, is_train=False)
    found = data.get_data(args, (preprocess, preprocess), tokenizer=open_clip.get_tokenizer(TINY))
    found["train"].set_epoch(0)
    return found


def _train_batches(args):
    found = _loaders(args)
    train = [(images, texts, keys) for images, texts, keys, _, _ in found["train"].dataloader]
    val = list(found["val"].dataloader)
    return train, val


def _same_batches(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert all(torch.equal(u, v) if torch.is_tensor(u) else u == v for u, v in zip(x, y))


def test_decode_sample_keeps_only_allowed_members(sentinel, tiny_data):
    with tarfile.open(os.path.join(os.path.dirname(tiny_data.train), "00000.tar")) as tar:
        members = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()[:3]}
    raw = {"__key__": "k", "__url__": "u", **members, **{ext: payload_bytes(sentinel, ext) for ext in EXTRA_MEMBERS}}
    decoded = decode_sample(raw)
    assert sorted(decoded) == sorted(["__key__", "__url__", *members])
    assert decoded["png"].mode == "RGB" and isinstance(decoded["txt"], str) and isinstance(decoded["json"], dict)
    assert not sentinel.exists()


def test_every_shard_reader_ignores_pickled_members(sentinel, tiny_data, tmp_path):
    """Training (with a keep-list too), OpenCLIP's validation loader, retrieval data and embed
    read a tampered shard exactly as the clean one, and never run the payload."""
    bad_train = tamper_split(tiny_data.train, tmp_path / "train", sentinel)
    bad_val = tamper_split(tiny_data.val, tmp_path / "val", sentinel)
    bad_test = tamper_split(tiny_data.test, tmp_path / "test", sentinel)
    common = ("--dataset-type", "webdataset")
    clean = _train_batches(_args("--train-data", tiny_data.train, "--val-data", tiny_data.val, *common))
    tampered = _train_batches(_args("--train-data", bad_train, "--val-data", bad_val, *common))
    for a, b in zip(clean, tampered):
        _same_batches(a, b)

    keep = tmp_path / "keep.txt"
    keep.write_text("\n".join(k for _, _, keys in clean[0][:4] for k in keys[:8]) + "\n")
    kept = _train_batches(
        _args("--train-data", bad_train, "--val-data", bad_val, "--keep-list", str(keep), "--batch-size", "8", *common)
    )[0]
    assert sorted(k for _, _, keys in kept for k in keys) == sorted(keep.read_text().split())

    def expand(pattern):
        return upstream_data.expand_urls(pattern)[0]

    clean_test = [(img.tobytes(), caps) for img, caps, _ in retrieval.iter_webdataset(expand(tiny_data.test))]
    bad_test_items = [(img.tobytes(), caps) for img, caps, _ in retrieval.iter_webdataset(expand(bad_test))]
    assert bad_test_items == clean_test and len(clean_test) == 32

    preprocess = open_clip.image_transform(32, is_train=False)
    tokenizer = open_clip.get_tokenizer(TINY)
    url = expand(bad_train)[0]
    part = list(embeddings._wds_part(url, preprocess, tokenizer, 64, 0, "key"))
    assert sum(len(batch[2]) for batch in part) == 128
    assert not sentinel.exists()


# OpenCLIP's own webdataset loader (open_clip_train.data, from PYTHONPATH) over the shards of argv[1]
OPENCLIP_LOADER_PROBE = """
import sys
from types import SimpleNamespace

import open_clip
from open_clip_train import data

args = SimpleNamespace(val_data=sys.argv[1], val_num_samples=None, batch_size=16, workers=0, world_size=1,
                       train_num_samples=None, dataset_resampled=False, seed=0)
transform = open_clip.image_transform(32, is_train=False)
info = data.get_wds_dataset(args, transform, is_train=False, tokenizer=open_clip.get_tokenizer("RN50"))
print(sum(len(batch[0]) for batch in info.dataloader))
"""


@pytest.mark.slow
def test_patched_fork_loader_ignores_pickled_members(sentinel, tiny_data, tmp_path):
    """The fork patch's one-line change: OpenCLIP's own webdataset loader, patched, never
    unpickles; unpatched, it does (the control)."""
    bad_val = tamper_split(tiny_data.val, tmp_path / "val", sentinel)
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "read_val_with_openclip_loader.py").write_text(OPENCLIP_LOADER_PROBE)

    def run(src_dir):  # (in a fork of the tests' server that imports open_clip_train from src_dir)
        env = {"PYTHONPATH": os.pathsep.join((str(probe), src_dir))}
        return run_module("read_val_with_openclip_loader", [bad_val], cwd=tmp_path, env=env)

    fork = tmp_path / "fork"
    upstream_dir = os.path.dirname(os.path.dirname(open_clip.__file__))
    shutil.copytree(os.path.join(upstream_dir, "open_clip_train"), fork / "src" / "open_clip_train")
    unpatched = run(str(fork / "src"))
    assert sentinel.exists(), unpatched.stderr[-2000:]  # stock OpenCLIP unpickles shard members
    sentinel.unlink()
    patch = os.path.join(REPO, "patches", "open_clip_train-3.3.0.patch")
    subprocess.run(["git", "apply", patch], cwd=fork, check=True, capture_output=True)
    patched = run(str(fork / "src"))
    assert patched.returncode == 0, patched.stderr[-3000:]
    assert patched.stdout.split()[-1] == "64" and not sentinel.exists()


def _train(tmp_path, name, train, val, *extra):
    flags = [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        train,
        "--val-data",
        val,
        "--dataset-type",
        "webdataset",
        "--workers",
        "1",
        "--sample-key",
        "key",
        "--selection",
        "dissect-mome",
        "--train-num-samples",
        "128",  # four steps an epoch, from shards that are all tampered
        "--logs",
        str(tmp_path),
        "--name",
        name,
        *extra,
    ]
    return run_module("open_clip_dissect.main", flags)


@pytest.mark.slow
def test_training_on_a_tampered_shard_equals_clean_training(sentinel, tiny_data, tmp_path):
    bad_train = tamper_split(tiny_data.train, tmp_path / "train", sentinel)
    bad_val = tamper_split(tiny_data.val, tmp_path / "val", sentinel)
    for name, train, val in (("clean", tiny_data.train, tiny_data.val), ("tampered", bad_train, bad_val)):
        result = _train(tmp_path, name, train, val, "--epochs", "1")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    clean, tampered = (train_losses(tmp_path / n / "out.log") for n in ("clean", "tampered"))
    assert len(clean) == 4 and tampered == clean
    assert not sentinel.exists()

    # The run's selection state, tampered: resuming refuses it in one line naming the file.
    state = tmp_path / "clean" / "checkpoints" / "epoch_1.dissect-state.rank0-of-1"
    saved = torch.load(state, weights_only=True)
    torch.save({**saved, "note": Payload(sentinel)}, state)
    result = _train(
        tmp_path,
        "resumed",
        tiny_data.train,
        tiny_data.val,
        "--epochs",
        "2",
        "--resume",
        str(tmp_path / "clean" / "checkpoints" / "epoch_1.pt"),
    )
    assert result.returncode == 2 and not sentinel.exists()
    last = result.stderr.strip().splitlines()[-1]
    assert str(state) in last and "refused" in last and "--selection-reset-history" in last
    assert "Traceback" not in result.stderr


def test_state_files_are_read_safely(sentinel, tmp_path):
    good = tmp_path / "good"
    selection.save_state(str(good), {"store": {}, "strategy": "random"})
    assert selection.load_state(str(good) + ".rank0-of-1")["strategy"] == "random"
    evil = tmp_path / "evil"
    torch.save({"format": selection.STATE_FORMAT, "store": Payload(sentinel)}, evil)
    with pytest.raises(InputError, match="refused.*--selection-reset-history") as error:
        selection.load_state(str(evil))
    assert error.value.subject == str(evil) and not sentinel.exists()
    truncated = tmp_path / "truncated"
    with open(str(good) + ".rank0-of-1", "rb") as f:
        truncated.write_bytes(f.read()[:100])
    with pytest.raises(InputError, match="cannot read") as error:
        selection.load_state(str(truncated))
    assert error.value.subject == str(truncated) and "\n" not in str(error.value)


@pytest.fixture
def pickled_checkpoint(tmp_path, sentinel):
    """A loadable tiny-model checkpoint that also carries a pickle payload."""
    model = open_clip.create_model(TINY)
    path = tmp_path / "pickled.pt"
    torch.save({"epoch": 1, "state_dict": model.state_dict(), "note": Payload(sentinel)}, path)
    return str(path)


def test_pickled_checkpoint_is_refused_unless_allowed(pickled_checkpoint, sentinel, caplog):
    with pytest.raises(InputError, match="--allow-pickle-checkpoints") as error:
        load_frozen_model(TINY, pickled_checkpoint, flag="--oracle-checkpoint")
    assert error.value.subject == pickled_checkpoint and not sentinel.exists()
    with caplog.at_level("WARNING"):
        load_frozen_model(TINY, pickled_checkpoint, allow_pickle=True)
    assert sentinel.exists()  # the opt-in really unpickles (here: the harmless payload ran)
    assert pickled_checkpoint in caplog.text


@pytest.mark.slow
def test_pickled_checkpoint_is_refused_by_the_commands(pickled_checkpoint, sentinel, tiny_data, tmp_path):
    result = run_module(
        "open_clip_dissect.cli", ["eval", "--model", TINY, "--checkpoint", pickled_checkpoint, "--data", tiny_data.test]
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]  # (OpenCLIP's own warnings come before it)
    assert last.startswith("open-clip-dissect eval: error: ") and pickled_checkpoint in last
    result = run_module(
        "open_clip_dissect.main",
        [
            *TINY_TRAIN_FLAGS,
            "--train-data",
            tiny_data.train,
            "--dataset-type",
            "webdataset",
            "--workers",
            "1",
            "--epochs",
            "1",
            "--logs",
            str(tmp_path),
            "--name",
            "oracle",
            "--selection",
            "clipscore-oracle",
            "--oracle-model",
            TINY,
            "--oracle-checkpoint",
            pickled_checkpoint,
        ],
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert pickled_checkpoint in last and "--allow-pickle-checkpoints" in last
    assert not sentinel.exists()
