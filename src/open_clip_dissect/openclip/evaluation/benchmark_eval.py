"""Zero-shot retrieval on MS-COCO 5k, Flickr30K 1k and Flickr8K through LAION's CLIP_benchmark.

The paper (and most CLIP papers) report these numbers with ``clip-benchmark``; this module runs
its data set classes and its ``metrics.zeroshot_retrieval.evaluate`` on local files only. It is
behind the optional extra ``eval`` (``pip install 'open_clip_dissect[eval]'``).

CLIP_benchmark's ``build_dataset`` downloads whatever is missing (``wget``, ``kaggle``, even
``sys.exit``) whatever ``download`` says, so it is never called: the files are checked here and
the data set classes it would build (torchvision's ``CocoCaptions``, its own ``Flickr``) are
built directly, on the same paths it uses.

Layouts (ROOT is ``--dataset-root``):

- ``mscoco_captions``: ``ROOT/val2014/*.jpg`` and ``ROOT/coco_test_karpathy.json`` (COCO captions
  JSON: ``images`` with ``file_name``, ``annotations`` with ``image_id`` and ``caption``);
- ``flickr30k`` / ``flickr8k``: ``ROOT/<name>.jpg`` and ``ROOT/flickr30k_test_karpathy.txt`` /
  ``ROOT/flickr8k_test_karpathy.txt`` (header ``image,caption``, one row per caption; CLIP_benchmark
  splits each row on ``.jpg,`` without CSV parsing).
"""

import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from open_clip_dissect.core.scorer import unwrap
from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.evaluation.retrieval import KS, with_r_sum

log = logging.getLogger(__name__)

EXTRA = "pip install 'open_clip_dissect[eval]'"
ANNOTATIONS = "https://github.com/mehdidc/retrieval_annotations/releases/download/1.0.0"


@dataclass(frozen=True)
class Layout:
    annotation: str  # the annotation file's name in ROOT (CLIP_benchmark's default, test split)
    image_dir: str  # the images' folder under ROOT ("" = ROOT itself)
    images_from: str  # where the images come from, for the error messages


LAYOUTS = {
    "mscoco_captions": Layout(
        "coco_test_karpathy.json",
        "val2014",
        "http://images.cocodataset.org/zips/val2014.zip unzipped in ROOT, which makes ROOT/val2014/",
    ),
    "flickr30k": Layout(
        "flickr30k_test_karpathy.txt",
        "",
        "the *.jpg files of Kaggle's hsankesara/flickr-image-dataset "
        "(flickr30k_images/flickr30k_images/) directly in ROOT",
    ),
    "flickr8k": Layout(
        "flickr8k_test_karpathy.txt", "", "the *.jpg files of Kaggle's adityajn105/flickr8k (Images/) directly in ROOT"
    ),
}
BENCHMARKS = tuple(LAYOUTS)


def require_clip_benchmark(flag: str):
    """CLIP_benchmark's retrieval metric module, or an ``InputError`` naming the extra."""
    try:
        import pycocotools.coco  # noqa: F401  (torchvision's CocoCaptions needs it)
        from clip_benchmark.datasets import builder, flickr  # noqa: F401  (builder needs requests)
        from clip_benchmark.metrics import zeroshot_retrieval
    except ImportError as exn:
        raise InputError(
            flag, f"needs CLIP_benchmark and pycocotools (missing: {exn.name}); install the optional extra: {EXTRA}"
        ) from None
    return zeroshot_retrieval


def check_name(name: str, flag: str = "--benchmark") -> str:
    if name not in LAYOUTS:
        raise InputError(flag, f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    return name


def _fetch_hint(name: str, root: str) -> str:
    layout = LAYOUTS[name]
    return (
        f"to fetch: images: {layout.images_from.replace('ROOT', root)}; annotations: "
        f"{ANNOTATIONS}/{layout.annotation} saved as {os.path.join(root, layout.annotation)}"
    )


def _read_coco(path: str) -> Tuple[List[str], List[int]]:
    with open(path) as f:
        data = json.load(f)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise InputError(path, "not a COCO captions file (needs the lists 'images' and 'annotations')")
    counts = {image["id"]: 0 for image in data["images"]}
    for annotation in data["annotations"]:
        if annotation.get("image_id") not in counts:
            raise InputError(path, f"caption {annotation.get('id')} names an image id that is not in 'images'")
        counts[annotation["image_id"]] += 1
    ordered = sorted(data["images"], key=lambda image: image["id"])  # CocoCaptions' order
    return [image["file_name"] for image in ordered], [counts[image["id"]] for image in ordered]


def _read_flickr(path: str) -> Tuple[List[str], List[int]]:
    counts: Dict[str, int] = {}
    with open(path) as f:
        f.readline()  # header
        for number, line in enumerate(f, start=2):
            line = line.strip()
            if not line:
                continue
            if line.count(".jpg,") != 1:
                raise InputError(
                    path, f"line {number} is not '<name>.jpg,<caption>' (CLIP_benchmark splits every row on '.jpg,')"
                )
            image = line.split(".jpg,")[0] + ".jpg"
            counts[image] = counts.get(image, 0) + 1
    return list(counts), list(counts.values())


def check_benchmark_files(
    name: str, root: str, annotation_file: Optional[str] = None, flag: str = "--dataset-root"
) -> dict:
    """Check a benchmark's local files before anything reads them; return its paths and the
    number of images and captions. Every problem is an ``InputError`` naming the path and what
    to fetch; nothing is ever downloaded."""
    check_name(name)
    layout = LAYOUTS[name]
    if not os.path.isdir(root):
        raise InputError(flag, f"{root}: no such folder; {_fetch_hint(name, root)}")
    image_root = os.path.join(root, layout.image_dir) if layout.image_dir else root
    if not os.path.isdir(image_root):
        raise InputError(image_root, f"no such folder ({name} images); {_fetch_hint(name, root)}")
    annotation = annotation_file or os.path.join(root, layout.annotation)
    if not os.path.isfile(annotation):
        raise InputError(annotation, f"annotation file not found; {_fetch_hint(name, root)}")
    if os.path.getsize(annotation) == 0:
        raise InputError(
            annotation, f"annotation file is empty (a failed download leaves a 0-byte file); {_fetch_hint(name, root)}"
        )
    try:
        images, counts = (_read_coco if name == "mscoco_captions" else _read_flickr)(annotation)
    except (UnicodeDecodeError, json.JSONDecodeError) as exn:
        raise InputError(annotation, f"cannot read the annotations: {exn}") from None
    if not images:
        raise InputError(annotation, f"lists no image; {_fetch_hint(name, root)}")
    if 0 in counts:
        raise InputError(annotation, f"image {images[counts.index(0)]} has no caption")
    missing = [image for image in images if not os.path.isfile(os.path.join(image_root, image))]
    if missing:
        raise InputError(
            os.path.join(image_root, missing[0]),
            f"named in {annotation} but absent ({len(missing)} of {len(images)} images "
            f"missing); {_fetch_hint(name, root)}",
        )
    return {
        "benchmark": name,
        "dataset_root": root,
        "image_root": image_root,
        "annotation_file": annotation,
        "images": len(images),
        "captions": sum(counts),
    }


def build_benchmark_dataset(
    name: str, root: str, annotation_file: Optional[str] = None, transform=None, flag: str = "--dataset-root"
):
    """``(CLIP_benchmark's data set for the test split, the checked paths and counts)``."""
    require_clip_benchmark(flag)
    files = check_benchmark_files(name, root, annotation_file, flag)
    if name == "mscoco_captions":
        from torchvision.datasets import CocoCaptions

        with contextlib.redirect_stdout(sys.stderr):  # pycocotools prints its progress
            dataset = CocoCaptions(root=files["image_root"], annFile=files["annotation_file"], transform=transform)
    else:
        from clip_benchmark.datasets.flickr import Flickr

        dataset = Flickr(root=files["image_root"], ann_file=files["annotation_file"], transform=transform)
    return dataset, files


class _Encoders:
    """The model's two encoders at OpenCLIP's ``--precision`` (autocast and input dtype), on
    its device, returning fp32; CLIP_benchmark then runs with its own amp off."""

    def __init__(self, model, device, precision: str):
        from open_clip import get_input_dtype
        from open_clip_train.precision import get_autocast

        self.model, self.device = model, torch.device(device)
        self.autocast = get_autocast(precision, device_type=self.device.type)
        self.input_dtype = get_input_dtype(precision)

    def encode_image(self, images):
        with self.autocast():
            return self.model.encode_image(images.to(self.device, dtype=self.input_dtype)).float()

    def encode_text(self, tokens):
        with self.autocast():
            return self.model.encode_text(tokens.to(self.device)).float()


def evaluate_benchmark(
    model,
    preprocess,
    tokenizer,
    name: str,
    root: str,
    annotation_file: Optional[str] = None,
    device="cpu",
    batch_size: int = 64,
    precision: str = "fp32",
    workers: int = 0,
    flag: str = "--dataset-root",
) -> Dict[str, float]:
    """IR/TR Recall@1/5/10 and R@sum (percent) by ``clip_benchmark.metrics.zeroshot_retrieval``,
    with the model in eval mode; plus the number of images and captions."""
    zeroshot_retrieval = require_clip_benchmark(flag)
    from clip_benchmark.datasets.builder import image_captions_collate_fn

    dataset, files = build_benchmark_dataset(name, root, annotation_file, preprocess, flag)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=image_captions_collate_fn
    )
    model = unwrap(model)
    was_training = model.training
    model.eval()
    try:
        raw = zeroshot_retrieval.evaluate(
            _Encoders(model, device, precision),
            loader,
            tokenizer,
            torch.device(device).type,
            amp=False,
            recall_k_list=list(KS),
        )
    finally:
        model.train(was_training)
    # Their image_retrieval is text -> image (our IR, a mean over captions), text_retrieval image
    # -> text (TR, over images). They return fp32 means; a mean of hits is hits / queries exactly.
    n_texts, n_images = files["captions"], files["images"]
    metrics = {}
    for k in KS:
        metrics[f"IR@{k}"] = 100.0 * (round(raw[f"image_retrieval_recall@{k}"] * n_texts) / n_texts)
        metrics[f"TR@{k}"] = 100.0 * (round(raw[f"text_retrieval_recall@{k}"] * n_images) / n_images)
    metrics = with_r_sum(metrics)
    metrics.update({"images": float(files["images"]), "captions": float(files["captions"])})
    return metrics


# ----------------------------------------------------------------------------- during training


def benchmark_names(value: Optional[str], flag: str = "--retrieval-benchmark") -> List[str]:
    """The comma-separated list of ``--retrieval-benchmark``, checked."""
    names = [name.strip() for name in (value or "").split(",") if name.strip()]
    return [check_name(name, flag) for name in names]


def benchmark_root(root: str, name: str) -> str:
    """``--benchmark-root``: ``{benchmark}`` is replaced by the name, else ``ROOT/<name>``."""
    return root.format(benchmark=name) if "{benchmark}" in root else os.path.join(root, name)


def check_training_args(args) -> None:
    """At start-up: the benchmarks exist on disk and CLIP_benchmark is installed."""
    names = benchmark_names(args.retrieval_benchmark)
    if not names:
        if args.benchmark_root:
            log.warning("--benchmark-root without --retrieval-benchmark: ignored")
        return
    if not args.benchmark_root:
        raise InputError("--retrieval-benchmark", "needs --benchmark-root")
    require_clip_benchmark("--retrieval-benchmark")
    for name in names:
        check_benchmark_files(name, benchmark_root(args.benchmark_root, name), flag="--benchmark-root")


def evaluate_benchmarks(model, preprocess, tokenizer, args) -> Dict[str, Dict[str, float]]:
    """Every ``--retrieval-benchmark`` at the run's device, precision and batch size."""
    return {
        name: evaluate_benchmark(
            model,
            preprocess,
            tokenizer,
            name,
            benchmark_root(args.benchmark_root, name),
            device=args.device,
            batch_size=args.batch_size,
            precision=args.precision,
            workers=args.workers,
            flag="--benchmark-root",
        )
        for name in benchmark_names(args.retrieval_benchmark)
    }
