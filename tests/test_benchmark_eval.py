"""CLIP_benchmark as the backend for MS-COCO / Flickr: our synthetic test split in their real
file layouts, read by their real code; our retrieval metric against theirs; the checks that keep
anything from being downloaded; and the training-time --retrieval-benchmark."""

import json
import os
import shutil

import open_clip
import pytest
import torch
from conftest import TINY, TINY_TRAIN_FLAGS, read_jsonl, run_module

from open_clip_dissect import cli, synthetic
from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.evaluation import benchmark_eval
from open_clip_dissect.openclip.evaluation.retrieval import (
    embed_retrieval_data,
    evaluate_retrieval,
    iter_retrieval_data,
)

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast

pytest.importorskip("clip_benchmark", reason="needs the eval extra: pip install 'open_clip_dissect[eval]'")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """24 test images x 3 captions as shards (JPEG) and in the COCO and Flickr layouts under
    ROOT/<benchmark>/ (as --benchmark-root takes them), a few training pairs, and a random tiny
    model saved as a checkpoint."""
    root = tmp_path_factory.mktemp("bench")
    sets = root / "sets"
    manifest = synthetic.make_dataset(
        str(root / "data"),
        train_size=64,
        val_size=0,
        seed=3,
        noise_rate=0.0,
        shard_size=64,
        image_format="jpg",
        progress=False,
        test_size=24,
        test_captions=3,
        coco_layout=str(sets / "mscoco_captions"),
        flickr_layout=str(sets / "flickr30k"),
    )
    scenes = [s.scene for s in synthetic.make_samples("test", 1000, 3, captions_per_image=3)]
    assert len(set(scenes)) == len(scenes)  # the test split repeats no scene, so no image ties
    torch.manual_seed(1)
    checkpoint = root / "model" / "epoch_1.pt"
    checkpoint.parent.mkdir()
    torch.save({"epoch": 1, "state_dict": open_clip.create_model(TINY).state_dict()}, checkpoint)
    return root, manifest, str(checkpoint)


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """wget and kaggle on PATH record any call, and CLIP_benchmark's shell-out raises."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("wget", "kaggle"):
        (bin_dir / name).write_text(f"#!/bin/sh\necho called > {tmp_path}/{name}.called\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    from clip_benchmark.datasets import builder

    def refuse(*args, **kwargs):
        raise AssertionError(f"CLIP_benchmark tried to run {args}")

    monkeypatch.setattr(builder, "call", refuse)
    yield
    assert not list(tmp_path.glob("*.called"))


def _samples(dataset):
    return [dataset[i] for i in range(len(dataset))]


def test_layouts_are_read_by_clip_benchmark_as_the_shards_hold_them(bench, no_download):
    from clip_benchmark.datasets.builder import build_dataset

    root, manifest, _ = bench
    shards = list(iter_retrieval_data(manifest["splits"]["test"]["pattern"]))
    coco = _samples(
        build_dataset(
            "mscoco_captions",
            root=str(root / "sets" / "mscoco_captions"),
            split="test",
            download=False,
            task="zeroshot_retrieval",
        )
    )
    assert [captions for _, captions in coco] == [captions for _, captions, _ in shards]
    assert all(a.tobytes() == b.tobytes() for (a, _), (b, _, _) in zip(coco, shards))  # same JPEG bytes
    flickr = _samples(
        build_dataset(
            "flickr30k", root=str(root / "sets" / "flickr30k"), split="test", download=False, task="zeroshot_retrieval"
        )
    )
    # Flickr rows are CSV: a caption with a comma is quoted, and CLIP_benchmark keeps the quotes.
    quoted = [[f'"{c}"' if "," in c else c for c in captions] for _, captions, _ in shards]
    assert [captions for _, captions in flickr] == quoted
    # Our checked construction gives CLIP_benchmark's data sets, without its builder.
    for name in ("mscoco_captions", "flickr30k"):
        ours, files = benchmark_eval.build_benchmark_dataset(name, str(root / "sets" / name))
        assert (files["images"], files["captions"]) == (24, 72) and len(ours) == 24
    assert [c for _, c in _samples(ours)] == quoted


def test_our_metric_equals_clip_benchmark_on_the_same_model_and_data(bench):
    """retrieval.py and zeroshot_retrieval.evaluate, fp32 with amp off, on tie-free features."""
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval

    root, manifest, checkpoint = bench
    model, preprocess, tokenizer = benchmark_eval_model(checkpoint)
    pattern = manifest["splits"]["test"]["pattern"]
    images, texts, text_image, _ = embed_retrieval_data(model, preprocess, tokenizer, iter_retrieval_data(pattern))
    assert min_margin(images, texts, text_image) > 1e-6  # no near-tie at any query: the tie rules agree
    ours = evaluate_retrieval(model, preprocess, tokenizer, pattern)

    samples = [(preprocess(image), captions) for image, captions, _ in iter_retrieval_data(pattern)]
    loader = torch.utils.data.DataLoader(samples, batch_size=10, collate_fn=image_captions_collate_fn)
    theirs = zeroshot_retrieval.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    for k in (1, 5, 10):
        assert ours[f"IR@{k}"] == pytest.approx(100 * theirs[f"image_retrieval_recall@{k}"], abs=1e-4)
        assert ours[f"TR@{k}"] == pytest.approx(100 * theirs[f"text_retrieval_recall@{k}"], abs=1e-4)
    assert 0 < ours["R@sum"] < 400  # a real ranking, not a trivial one


def min_margin(images, texts, text_image):
    """The smallest score gap between a query's best correct candidate and any wrong one."""
    sims = texts @ images.T  # caption queries
    own = torch.zeros_like(sims, dtype=torch.bool)
    own[torch.arange(len(texts)), text_image] = True
    ir = (sims - sims[own][:, None]).abs()[~own]
    best_own = torch.where(own.T, sims.T, -torch.inf).max(1).values  # image queries
    tr = (sims.T - best_own[:, None]).abs()[~own.T]
    return min(ir.min(), tr.min())


def benchmark_eval_model(checkpoint):
    from open_clip_dissect.openclip.models.frozen import load_frozen_model

    return load_frozen_model(TINY, checkpoint)


def test_eval_benchmark_and_eval_data_agree_and_write_json(bench, no_download, capsys):
    root, manifest, checkpoint = bench
    common = ["--model", TINY, "--checkpoint", checkpoint, "--workers", "0"]
    assert (
        cli.main(
            [
                "eval",
                *common,
                "--benchmark",
                "mscoco_captions",
                "--dataset-root",
                str(root / "sets" / "mscoco_captions"),
            ]
        )
        == 0
    )
    with open(checkpoint[:-3] + ".mscoco_captions.json") as f:
        coco = json.load(f)
    assert coco["benchmark"] == "mscoco_captions" and coco["backend"] == "clip_benchmark 1.6.2"
    assert (coco["images"], coco["captions"]) == (24, 72)
    assert (
        cli.main(["eval", *common, "--data", manifest["splits"]["test"]["pattern"], "--out", str(root / "data.json")])
        == 0
    )
    with open(root / "data.json") as f:
        ours = json.load(f)
    for key in ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10", "R@sum"):
        assert coco[key] == pytest.approx(ours[key], abs=1e-9), key
    flickr_root = root / "sets" / "flickr30k"
    assert (
        cli.main(
            [
                "eval",
                *common,
                "--benchmark",
                "flickr30k",
                "--dataset-root",
                str(flickr_root),
                "--out",
                str(root / "flickr.json"),
            ]
        )
        == 0
    )
    assert json.load(open(root / "flickr.json"))["captions"] == 72
    # flickr8k: the same layout under its own annotation name
    shutil.copy(flickr_root / "flickr30k_test_karpathy.txt", flickr_root / "flickr8k_test_karpathy.txt")
    assert (
        cli.main(
            [
                "eval",
                *common,
                "--benchmark",
                "flickr8k",
                "--dataset-root",
                str(flickr_root),
                "--out",
                str(root / "flickr8k.json"),
            ]
        )
        == 0
    )
    assert json.load(open(root / "flickr8k.json"))["R@sum"] == json.load(open(root / "flickr.json"))["R@sum"]


def _coco_copy(bench, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(bench[0] / "sets" / "mscoco_captions", root)
    return root


@pytest.mark.parametrize(
    "damage, named, says",
    [
        (lambda r: shutil.rmtree(r), "", "no such folder"),
        (lambda r: shutil.rmtree(r / "val2014"), "val2014", "val2014.zip"),
        (lambda r: os.remove(r / "coco_test_karpathy.json"), "coco_test_karpathy.json", "coco_test_karpathy.json"),
        (lambda r: open(r / "coco_test_karpathy.json", "w").close(), "coco_test_karpathy.json", "is empty"),
        (
            lambda r: os.remove(r / "val2014" / "COCO_val2014_000000000007.jpg"),
            "val2014/COCO_val2014_000000000007.jpg",
            "1 of 24 images missing",
        ),
    ],
)
def test_missing_coco_files_are_errors_that_name_the_path(bench, tmp_path, no_download, capsys, damage, named, says):
    root = _coco_copy(bench, tmp_path)
    damage(root)
    with pytest.raises(InputError, match=says) as info:
        benchmark_eval.check_benchmark_files("mscoco_captions", str(root))
    assert str(root / named).rstrip("/") in str(info.value)
    code = cli.main(["eval", "--model", TINY, "--benchmark", "mscoco_captions", "--dataset-root", str(root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("open-clip-dissect eval: error: ") and says in err[-1]


def test_missing_flickr_files_are_errors(bench, tmp_path, no_download):
    root = tmp_path / "flickr"
    shutil.copytree(bench[0] / "sets" / "flickr30k", root)
    os.remove(root / "00000003.jpg")
    with pytest.raises(InputError, match=r"00000003\.jpg.*1 of 24 images missing.*Kaggle"):
        benchmark_eval.check_benchmark_files("flickr30k", str(root))
    with pytest.raises(InputError, match="flickr8k_test_karpathy.txt"):
        benchmark_eval.check_benchmark_files("flickr8k", str(root))
    with open(root / "bad.txt", "w") as f:
        f.write("image,caption\n00000001.png,a caption\n")
    with pytest.raises(InputError, match="line 2"):
        benchmark_eval.check_benchmark_files("flickr30k", str(root), str(root / "bad.txt"))


def test_training_evaluates_the_benchmarks_on_rank_0(bench, tmp_path):
    root, manifest, _ = bench
    sets = str(root / "sets")
    flags = [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        manifest["splits"]["train"]["pattern"],
        "--dataset-type",
        "webdataset",
        "--train-num-samples",
        "64",
        "--workers",
        "0",
        "--epochs",
        "1",
        "--retrieval-benchmark",
        "mscoco_captions,flickr30k",
        "--benchmark-root",
        sets,
        "--logs",
        str(tmp_path),
        "--name",
        "run",
    ]
    result = run_module("open_clip_dissect.main", flags)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = read_jsonl(tmp_path / "run" / "checkpoints" / "results.jsonl")
    names = {key.split("_IR@1")[0] for r in records for key in r if key.endswith("_IR@1")}
    assert names == {"mscoco_captions", "flickr30k"}
    assert all(r["epoch"] == 1 and r["train_seconds"] > 0 for r in records)
    coco = next(r for r in records if "mscoco_captions_R@sum" in r)
    assert coco["mscoco_captions_captions"] == 72
    summary = run_module("open_clip_dissect.cli", ["summary", "--table", str(tmp_path / "run")])
    assert summary.returncode == 0 and "MS-COCO" in summary.stdout and "Flickr30K" in summary.stdout
    assert f"{coco['mscoco_captions_R@sum']:.2f}" in summary.stdout

    missing = run_module(
        "open_clip_dissect.main",
        [*flags[:-4], "--benchmark-root", str(tmp_path / "none"), "--logs", str(tmp_path), "--name", "bad"],
    )
    assert missing.returncode == 2 and "--benchmark-root" in missing.stderr.splitlines()[-1]
    unknown = run_module(
        "open_clip_dissect.main", [*flags[:-6], "--retrieval-benchmark", "imagenet", "--benchmark-root", sets]
    )
    assert unknown.returncode == 2 and "unknown benchmark 'imagenet'" in unknown.stderr
