"""``open-clip-dissect`` command and its sub-commands (``train``, ``make-data``, ``summary``, ``eval``,
``embed``, ``score``, ``filter``).

A sub-command raises ``InputError`` for bad input, before it writes anything where that can be
checked up front; ``main`` turns it into one line and exit status 2. Any other exception is a
bug and keeps its traceback.
"""

import argparse
import json
import os
import sys

from open_clip_dissect.atomic import atomic_output
from open_clip_dissect.errors import InputError, OneLineParser
from open_clip_dissect.openclip.models.configs import register_model_configs
from open_clip_dissect.openclip.models.frozen import ALLOW_PICKLE_FLAG

SOURCES = ("synthetic", "openclipart")
ALLOW_PICKLE_HELP = (
    "Load --checkpoint with full unpickling, for legacy checkpoints that store Python "
    "objects besides tensors; this runs any code the file carries, so use it only for "
    "files you trust (default: off, torch.load(weights_only=True))."
)


def make_data_parser(prog: str = "open-clip-dissect make-data") -> argparse.ArgumentParser:
    from open_clip_dissect import synthetic

    p = OneLineParser(
        prog=prog,
        description=(
            "Write an image-text data set (webdataset shards, optional CSV) with noisy "
            "correspondence injected into the training split: synthetic, or real pairs from the "
            "Open Clip Art Library (--source openclipart)."
        ),
    )
    p.add_argument("--out", required=True, help="Output directory (required).")
    p.add_argument(
        "--source",
        choices=SOURCES,
        default="synthetic",
        help="synthetic: drawn shapes and their descriptions; openclipart: the Open Clip Art "
        "Library's drawings with their authors' titles, tags and descriptions, from Debian's "
        "openclipart-png and openclipart-svg (docs/data.md) (default: synthetic).",
    )
    p.add_argument(
        "--from",
        dest="from_dir",
        default=None,
        metavar="DIR",
        help="--source openclipart: read the packages where they were unpacked (dpkg-deb -x of "
        "both into DIR) instead of fetching them (default: None, fetch into --cache).",
    )
    p.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="--source openclipart: where apt-get download and dpkg-deb -x put the packages, "
        "reused by later runs (default: $XDG_CACHE_HOME or ~/.cache, then "
        "open_clip_dissect/openclipart).",
    )
    p.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="Training pairs (default: 20000; with --source openclipart every sample not held out).",
    )
    p.add_argument(
        "--val-size",
        type=int,
        default=None,
        help="Clean validation pairs (default: 1000; 500 with --source openclipart, capped by what qualifies).",
    )
    p.add_argument(
        "--test-size",
        type=int,
        default=None,
        help="Images in the clean retrieval split 'test' (default: 0, none; 500 with --source "
        "openclipart, capped by what qualifies).",
    )
    p.add_argument(
        "--test-captions",
        type=int,
        default=None,
        help="Differently worded captions per test image (default: 5; --source openclipart has one).",
    )
    p.add_argument("--seed", type=int, default=0, help="Seed; same seed, same bytes (default: 0).")
    p.add_argument(
        "--noise-rate",
        type=float,
        default=None,
        help="Fraction of training pairs with a wrong caption, in [0, 1] (default: 0.4).",
    )
    p.add_argument(
        "--noise-kind",
        choices=synthetic.NOISE_KINDS,
        default=None,
        help="shuffle: another sample's caption; partial: one or two wrong attributes; "
        "mixed: each noisy pair one of the two (default: shuffle).",
    )
    web = p.add_argument_group("web-like difficulty (train and val splits; the test split stays balanced)")
    web.add_argument(
        "--preset",
        choices=sorted(synthetic.PRESETS),
        default=None,
        help="Named set of the difficulty and noise values; flags given explicitly override "
        "it. web: "
        + ", ".join(f"{k}={v}" for k, v in synthetic.PRESETS["web"].items())
        + " (default: None, plain data).",
    )
    web.add_argument(
        "--concept-zipf",
        type=float,
        default=None,
        help="Zipf exponent of the concept (colour and shape) frequencies, 0 = uniform (default: 0).",
    )
    web.add_argument(
        "--partial-caption-rate",
        type=float,
        default=None,
        help="Fraction of captions naming only some of the shapes or attributes (default: 0).",
    )
    web.add_argument(
        "--alt-text-rate",
        type=float,
        default=None,
        help="Fraction of captions in alt-text style, naming one object only (default: 0).",
    )
    web.add_argument(
        "--hard-image-rate",
        type=float,
        default=None,
        help="Fraction of images made harder: unmentioned shapes, low contrast, small shapes "
        "or a textured background (default: 0).",
    )
    web.add_argument(
        "--hard-image-kinds",
        default=None,
        help="Comma-separated kinds a hard image draws from, each with probability 1/2: "
        + ",".join(synthetic.HARDNESS)
        + " (default: all of them).",
    )
    web.add_argument(
        "--colors",
        type=int,
        default=None,
        help=f"Colour words in use, {len(synthetic.COLORS)} to {len(synthetic.ALL_COLORS)}: the plain six, "
        "then " + ", ".join(synthetic.EXTRA_COLORS) + f" (default: {len(synthetic.COLORS)}).",
    )
    web.add_argument(
        "--concept-unit",
        choices=synthetic.CONCEPT_UNITS,
        default=None,
        help="What a concept is for --concept-zipf and the rare group: a shape in a colour, or a "
        "colour word (default: shape-color).",
    )
    web.add_argument(
        "--pixel-noise",
        type=float,
        default=None,
        help="Standard deviation of Gaussian pixel noise on every split, 0-255 scale (default: 0).",
    )
    p.add_argument("--shard-size", type=int, default=1000, help="Samples per shard (default: 1000).")
    p.add_argument("--image-size", type=int, default=64, help="Image side in pixels (default: 64).")
    p.add_argument(
        "--image-format",
        choices=("png", "jpg"),
        default=None,
        help="Image encoding (default: png; jpg with --coco-layout or --flickr-layout, so "
        "that the shards and the layouts hold the same JPEG bytes).",
    )
    p.add_argument(
        "--csv",
        action="store_true",
        help="Also write <out>/<split>.csv (tab-separated, OpenCLIP's filepath/title "
        "columns plus key and noisy) with images as files (default: off).",
    )
    p.add_argument(
        "--coco-layout",
        default=None,
        metavar="DIR",
        help="Also write the test split in MS-COCO's Karpathy layout as CLIP_benchmark reads "
        "it: DIR/val2014/*.jpg and DIR/coco_test_karpathy.json (default: None).",
    )
    p.add_argument(
        "--flickr-layout",
        default=None,
        metavar="DIR",
        help="Also write the test split in Flickr30K's Karpathy layout as CLIP_benchmark "
        "reads it: DIR/*.jpg and DIR/flickr30k_test_karpathy.txt (default: None).",
    )
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="Processes writing shards (default: number of CPUs)."
    )
    p.add_argument("--force", action="store_true", help="Overwrite an existing data set in --out (default: refuse).")
    p.add_argument("--quiet", action="store_true", help="No progress bars (default: show them).")
    return p


def make_data(argv) -> int:
    from open_clip_dissect import synthetic

    args = make_data_parser().parse_args(argv)
    if args.source == "openclipart":
        return make_openclipart_data(args)
    for flag, value in (("--from", args.from_dir), ("--cache", args.cache)):
        if value is not None:
            raise InputError(flag, "goes with --source openclipart")
    args.train_size = 20000 if args.train_size is None else args.train_size
    args.val_size = 1000 if args.val_size is None else args.val_size
    args.test_size = 0 if args.test_size is None else args.test_size
    args.test_captions = 5 if args.test_captions is None else args.test_captions
    layouts = args.coco_layout or args.flickr_layout
    if args.image_format is None:
        args.image_format = "jpg" if layouts else "png"
    elif layouts and args.image_format != "jpg":
        raise InputError(
            "--image-format",
            "--coco-layout/--flickr-layout write JPEG files; the shards must "
            "hold the same images: use --image-format jpg",
        )
    for flag, value, least in (
        ("--train-size", args.train_size, 0),
        ("--val-size", args.val_size, 0),
        ("--test-size", args.test_size, 0),
        ("--test-captions", args.test_captions, 1),
        ("--image-size", args.image_size, 1),
        ("--workers", args.workers, 1),
    ):
        if value < least:
            raise InputError(flag, f"must be >= {least}, got {value}")
    for flag, folder in (
        ("--out", args.out),
        ("--coco-layout", args.coco_layout),
        ("--flickr-layout", args.flickr_layout),
    ):
        if folder and os.path.exists(folder) and not os.path.isdir(folder):
            raise InputError(flag, f"{folder} is a file, not a folder")
    settings = synthetic.resolve_settings(
        args.preset, **{name: getattr(args, name) for name in synthetic.SETTING_DEFAULTS}
    )
    manifest_path = os.path.join(args.out, "manifest.json")
    if os.path.exists(manifest_path) and not args.force:
        print(f"{manifest_path} exists: the data set is already there (use --force to rewrite it).")
        return 0
    manifest = synthetic.make_dataset(
        args.out,
        args.train_size,
        args.val_size,
        args.seed,
        settings.pop("noise_rate"),
        settings.pop("noise_kind"),
        args.shard_size,
        args.image_size,
        args.image_format,
        args.csv,
        args.workers,
        progress=not args.quiet,
        test_size=args.test_size,
        test_captions=args.test_captions,
        coco_layout=args.coco_layout,
        flickr_layout=args.flickr_layout,
        difficulty=synthetic.Difficulty(**settings),
        preset=args.preset,
    )
    for split, info in manifest["splits"].items():
        print(
            f"{split}: {info['num_samples']} samples ({info['num_noisy']} noisy) in "
            f"{info['num_shards']} shards: {info['pattern']}"
        )
    for layout in ("coco_layout", "flickr_layout"):
        if layout in manifest:
            info = manifest[layout]
            print(
                f"test split in the {layout.split('_')[0]} layout: {info['images']} images, "
                f"{info['captions']} captions in {info['root']}"
            )
    return 0


def make_openclipart_data(args) -> int:
    """``make-data --source openclipart``: the flags that only the synthetic generator reads are
    refused; the packages are found (``--from``) or fetched (``--cache``) before anything is
    written."""
    from open_clip_dissect import openclipart, synthetic

    synthetic_only = [
        ("--train-size", args.train_size),
        ("--test-captions", args.test_captions),
        ("--preset", args.preset),
        ("--coco-layout", args.coco_layout),
        ("--flickr-layout", args.flickr_layout),
    ] + [
        ("--" + name.replace("_", "-"), getattr(args, name))
        for name in synthetic.SETTING_DEFAULTS
        if "noise" not in name
    ]
    for flag, value in synthetic_only:
        if value is not None:
            raise InputError(flag, "goes with --source synthetic, not --source openclipart")
    if args.noise_kind not in (None, "shuffle"):
        raise InputError("--noise-kind", f"--source openclipart has shuffle noise only, got {args.noise_kind!r}")
    noise_rate = 0.4 if args.noise_rate is None else args.noise_rate
    val_size = 500 if args.val_size is None else args.val_size
    test_size = 500 if args.test_size is None else args.test_size
    for flag, value, least in (
        ("--val-size", val_size, 0),
        ("--test-size", test_size, 0),
        ("--image-size", args.image_size, 1),
        ("--shard-size", args.shard_size, 1),
        ("--workers", args.workers, 1),
    ):
        if value < least:
            raise InputError(flag, f"must be >= {least}, got {value}")
    if not 0.0 <= noise_rate <= 1.0:
        raise InputError("--noise-rate", f"must be in [0, 1], got {noise_rate}")
    check_output_folder(args.out)
    if args.cache is not None:
        check_output_folder(args.cache, "--cache")
    manifest_path = os.path.join(args.out, "manifest.json")
    if os.path.exists(manifest_path) and not args.force:
        print(f"{manifest_path} exists: the data set is already there (use --force to rewrite it).")
        return 0
    root = openclipart.locate(args.from_dir, args.cache)
    manifest = openclipart.make_dataset(
        args.out,
        root,
        val_size=val_size,
        test_size=test_size,
        seed=args.seed,
        noise_rate=noise_rate,
        shard_size=args.shard_size,
        image_size=args.image_size,
        image_format=args.image_format or "png",
        csv=args.csv,
        workers=args.workers,
        progress=not args.quiet,
    )
    counts = manifest["counts"]
    print(
        f"openclipart {manifest['packages']}: {counts['listings']} listings, {counts['distinct_images']} "
        f"distinct images ({counts['duplicates_dropped']} duplicates, {counts['unreadable']} unreadable left "
        f"out), {manifest['junk_samples']} junk ("
        + ", ".join(f"{rule} {n}" for rule, n in manifest["junk"].items())
        + f"), {counts['shared_captions']} with a shared caption, {counts['held_out_eligible']} "
        f"qualify for val/test"
    )
    for split, info in manifest["splits"].items():
        print(
            f"{split}: {info['num_samples']} samples ({info['num_noisy']} noisy, {info['num_junk']} junk) in "
            f"{info['num_shards']} shards: {info['pattern']}"
        )
    return 0


def read_results(run_dir: str) -> list:
    """Evaluation records of ``<run>/checkpoints/results.jsonl`` (OpenCLIP's val metrics and our
    ``--retrieval-data`` metrics), one merged dict per epoch."""
    if not os.path.isdir(run_dir):
        raise InputError(run_dir, "no such run folder (give <--logs>/<--name> of a training run)")
    path = os.path.join(run_dir, "checkpoints", "results.jsonl")
    if not os.path.isfile(path):
        raise InputError(
            path, "no evaluation results (was the run given --val-data, --retrieval-data or --retrieval-benchmark?)"
        )
    by_epoch = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exn:
                    raise InputError(path, f"line {number} is not JSON ({exn})") from None
                by_epoch.setdefault(record.get("epoch"), {}).update(record)
    return list(by_epoch.values())


def read_selection(run_dir: str) -> list:
    """Per-epoch selection summaries (audit included) from ``<run>/selection.jsonl``, if any."""
    path = os.path.join(run_dir, "selection.jsonl")
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exn:
                    raise InputError(path, f"line {number} is not JSON ({exn})") from None
    return records


def not_selecting_yet(audits: dict) -> dict:
    """``{epoch: why}`` for the epochs in which a history strategy could not select yet, so that
    its audit is that of a random choice: no history before the epoch (its first epoch sees every
    sample for the first time: ``delta`` is 0), or a warm-up still running
    (``selection_from_epoch``, 0-based, after the epoch)."""
    out, before = {}, 0
    for epoch in sorted(e for e in audits if isinstance(e, int)):
        a = audits[epoch]
        size = a.get("history_size") or 0
        start = a.get("selection_from_epoch")
        if size and not before:
            out[epoch] = "no history yet: every sample is seen for the first time, so this is not a selection result"
        elif start is not None and epoch - 1 < start:
            out[epoch] = f"warm-up: selecting from epoch {start + 1}"
        before = size
    return out


def selection_picture(run_dir: str):
    """The ``--selection-record`` plot of the run, if it drew one."""
    from open_clip_dissect.openclip.evaluation.benchmark_table import read_params

    folder = read_params(run_dir).get("selection_record")
    path = os.path.join(folder, "distributions.png") if folder and folder != "None" else None
    return path if path and os.path.isfile(path) else None


def retrieval_summary(record: dict) -> dict:
    """Retrieval recalls in percent; R@sum = IR@1 + IR@10 + TR@1 + TR@10 as in the DISSect paper.

    Uses the multi-caption ``--retrieval-data`` metrics (``retrieval_*``) when the record has
    them, else OpenCLIP's val metrics, whose ``text_to_image`` is image retrieval (IR) and
    ``image_to_text`` text retrieval (TR); a run with neither shows its first
    ``--retrieval-benchmark`` (``<benchmark>_*``).
    """
    prefixes = [key[: -len("R@sum")] for key in record if key.endswith("_R@sum")]
    if "retrieval_R@sum" in record or (prefixes and "text_to_image_R@1" not in record):
        prefix = "retrieval_" if "retrieval_R@sum" in record else prefixes[0]
        return {k: record[f"{prefix}{k}"] for k in ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10", "R@sum")}
    out = {}
    for name, prefix in (("IR", "text_to_image"), ("TR", "image_to_text")):
        for k in (1, 5, 10):
            out[f"{name}@{k}"] = 100.0 * record[f"{prefix}_R@{k}"]
    out["R@sum"] = out["IR@1"] + out["IR@10"] + out["TR@1"] + out["TR@10"]
    return out


def _has_retrieval_metrics(record: dict) -> bool:
    try:
        retrieval_summary(record)
    except KeyError:
        return False
    return True


def summary_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="open-clip-dissect summary",
        description="Print the validation retrieval metrics of a run, or with "
        "--table the paper's Table 1 over several runs.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="The run's directory: <--logs>/<--name>.")
    p.add_argument(
        "--table",
        action="store_true",
        help="A Table-1-shaped table (per benchmark: a row per method, a column group per "
        "ratio: IR@1, IR@10, TR@1, TR@10, R@sum) from the `eval --benchmark` JSON next to "
        "each run's last checkpoint (default: off).",
    )
    return p


def run_folder(path: str) -> str:
    """The run folder a ``summary`` argument names: ``<run>/checkpoints`` (where the results and
    checkpoints are) stands for ``<run>``."""
    path = os.path.normpath(path)
    inner = os.path.join(path, "checkpoints")
    if os.path.basename(path) == "checkpoints" and not os.path.isdir(inner) and os.path.isdir(path):
        return os.path.dirname(path)
    return path


def summary(argv) -> int:
    p = summary_parser()
    args = p.parse_args(argv)
    args.run_dirs = [run_folder(d) for d in args.run_dirs]
    missing = [d for d in args.run_dirs if not os.path.isdir(d)]
    if missing:
        raise InputError(missing[0], "no such run folder (give <--logs>/<--name> of a training run)")
    if args.table:
        from open_clip_dissect.openclip.evaluation.benchmark_table import table1

        print(table1(args.run_dirs))
        return 0
    if len(args.run_dirs) != 1:
        p.error("give one run directory (or --table and several)")
    args.run_dir = args.run_dirs[0]
    records = read_results(args.run_dir)
    if not any(_has_retrieval_metrics(r) for r in records):
        raise InputError(
            os.path.join(args.run_dir, "checkpoints", "results.jsonl"), "holds no retrieval metrics (IR/TR recalls)"
        )
    records = [r for r in records if _has_retrieval_metrics(r)]
    audits = {a["epoch"]: a for a in read_selection(args.run_dir)}
    audit_columns = (
        ("kept", "precision", "random", "AUROC") if any("audit_kept_precision" in a for a in audits.values()) else ()
    )
    print(f"Validation retrieval of {args.run_dir} (percent; IR = text->image, TR = image->text)")
    if audit_columns:
        print(
            "Selection audit: kept = fraction of candidates trained on; precision = clean fraction "
            "of the kept set; random = clean fraction of all candidates; AUROC of the ranking "
            "score for clean vs noisy"
        )
    header = list(retrieval_summary(records[-1])) + list(audit_columns)
    print(f"{'epoch':>5} " + " ".join(f"{c:>9}" for c in header))
    waiting = not_selecting_yet(audits)
    for record in records:
        row = list(retrieval_summary(record).values())
        a = audits.get(record.get("epoch"), {})
        note = waiting.get(record.get("epoch")) if audit_columns else None
        if audit_columns:
            row += [
                a.get("kept", float("nan")) / max(a.get("candidates", 0), 1) if a else float("nan"),
                a.get("audit_kept_precision", float("nan")),
                a.get("audit_random_precision", float("nan")),
                a.get("audit_auroc", float("nan")),
            ]
        if note:  # not a selection result: the note instead of a random choice's audit
            row = row[:8]
        print(
            f"{record.get('epoch', '?'):>5} "
            + " ".join(f"{v:9.2f}" if i < 7 else f"{v:9.3f}" for i, v in enumerate(row))
            + (f"   {note}" if note else "")
        )
    if waiting and all(record.get("epoch") in waiting for record in records):
        name = next((a["selection"] for a in audits.values() if "selection" in a), "the strategy")
        print(f"{name} has not selected by its history yet in these epochs: train more epochs.")
    picture = selection_picture(args.run_dir)
    if picture:
        print(f"Selection picture (score distributions, kept vs dropped): {picture}")
    return 0


def eval_parser() -> argparse.ArgumentParser:
    from open_clip_dissect.openclip.evaluation.benchmark_eval import BENCHMARKS, EXTRA

    p = OneLineParser(
        prog="open-clip-dissect eval",
        description=(
            "Zero-shot retrieval (IR/TR Recall@1/5/10, R@sum) of a checkpoint, several captions per image: "
            "on our own webdataset/CSV data (--data) or on MS-COCO / Flickr through CLIP_benchmark "
            "(--benchmark, local files only)."
        ),
    )
    p.add_argument("--model", required=True, help="OpenCLIP model config (anything create_model takes).")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="Local checkpoint path (OpenCLIP training checkpoint or state dict) (default: None, random weights).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data",
        default=None,
        help="Retrieval data: webdataset shards (brace pattern) or a .csv/.tsv file "
        "(default: None; this or --benchmark).",
    )
    source.add_argument(
        "--benchmark",
        choices=BENCHMARKS,
        default=None,
        help=f"A standard test set evaluated by CLIP_benchmark's data set classes and its "
        f"zeroshot_retrieval.evaluate; needs the extra: {EXTRA} (default: None; this "
        f"or --data).",
    )
    p.add_argument(
        "--dataset-root",
        default=None,
        help="--benchmark: the folder holding the set (mscoco_captions: val2014/ and "
        "coco_test_karpathy.json; flickr30k/flickr8k: the .jpg files and "
        "flickr30k_test_karpathy.txt / flickr8k_test_karpathy.txt); nothing is "
        "downloaded (default: None).",
    )
    p.add_argument(
        "--annotation-file",
        default=None,
        help="--benchmark: another annotation file than the one in --dataset-root "
        "(default: None, the Karpathy test split's file there).",
    )
    p.add_argument("--batch-size", type=int, default=256, help="Batch size (default: 256).")
    p.add_argument("--workers", type=int, default=4, help="--benchmark: data-loader processes (default: 4).")
    p.add_argument("--device", default="cpu", help="Device (default: cpu).")
    p.add_argument("--precision", default="fp32", help="OpenCLIP precision; amp is off for fp32 (default: fp32).")
    p.add_argument("--csv-img-key", default="filepath", help="csv image column (default: filepath).")
    p.add_argument("--csv-caption-key", default="title", help="csv caption column (default: title).")
    p.add_argument("--csv-separator", default="\t", help="csv separator (default: tab).")
    p.add_argument(
        "--out",
        default=None,
        help="Write the metrics as JSON here (default: None; with --benchmark and "
        "--checkpoint: <checkpoint without .pt>.<benchmark>.json next to it).",
    )
    p.add_argument(ALLOW_PICKLE_FLAG, action="store_true", help=ALLOW_PICKLE_HELP)
    return p


def check_output_file(path, flag: str = "--out") -> None:
    """An output file path must not name a folder (checked before the work, not at its end)."""
    if path and os.path.isdir(path):
        raise InputError(flag, f"{path} is a folder; give a file path")


def check_output_folder(path, flag: str = "--out") -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(flag, f"{path} is a file, not a folder")


def benchmark_json_path(checkpoint: str, benchmark: str) -> str:
    """Where ``eval --benchmark`` writes its JSON by default: ``epoch_40.pt`` ->
    ``epoch_40.mscoco_captions.json`` (never ``*.pt``: OpenCLIP's ``--resume latest`` globs those)."""
    return f"{os.path.splitext(checkpoint)[0]}.{benchmark}.json"


def evaluate(argv) -> int:
    p = eval_parser()
    args = p.parse_args(argv)
    if args.benchmark and not args.dataset_root:
        p.error("--benchmark needs --dataset-root")
    if args.data and (args.dataset_root or args.annotation_file):
        p.error("--dataset-root and --annotation-file go with --benchmark, not --data")

    import open_clip
    import torch
    from open_clip_train.precision import get_autocast

    from open_clip_dissect.openclip.evaluation.benchmark_eval import (
        check_benchmark_files,
        evaluate_benchmark,
        require_clip_benchmark,
    )
    from open_clip_dissect.openclip.evaluation.retrieval import evaluate_retrieval
    from open_clip_dissect.openclip.launch.run_attempt import check_model_name
    from open_clip_dissect.openclip.models.frozen import load_frozen_model
    from open_clip_dissect.openclip.pipeline.keyed_data import check_data_source

    # Before the model loads: a missing extra or file is reported at once.
    check_model_name(args.model)
    if args.benchmark:
        require_clip_benchmark("--benchmark")
        check_benchmark_files(args.benchmark, args.dataset_root, args.annotation_file)
    else:
        check_data_source(args.data, "--data", args.csv_img_key, args.csv_caption_key, args.csv_separator)
    check_output_file(args.out)
    model, preprocess, tokenizer = load_frozen_model(
        args.model, args.checkpoint, args.device, args.precision, allow_pickle=args.allow_pickle_checkpoints
    )
    out = args.out
    if args.benchmark:
        metrics = evaluate_benchmark(
            model,
            preprocess,
            tokenizer,
            args.benchmark,
            args.dataset_root,
            args.annotation_file,
            args.device,
            args.batch_size,
            args.precision,
            args.workers,
        )
        from importlib.metadata import version

        metrics = {
            "benchmark": args.benchmark,
            "dataset_root": args.dataset_root,
            "annotation_file": args.annotation_file,
            "model": args.model,
            "checkpoint": args.checkpoint,
            "precision": args.precision,
            "backend": f"clip_benchmark {version('clip_benchmark')}",
            **metrics,
        }
        if out is None and args.checkpoint:
            out = benchmark_json_path(args.checkpoint, args.benchmark)
    else:
        metrics = evaluate_retrieval(
            model,
            preprocess,
            tokenizer,
            args.data,
            args.device,
            args.batch_size,
            get_autocast(args.precision, torch.device(args.device).type),
            open_clip.get_input_dtype(args.precision),
            img_key=args.csv_img_key,
            caption_key=args.csv_caption_key,
            sep=args.csv_separator,
            flag="--data",
        )
    print(json.dumps(metrics, indent=1))
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with atomic_output(out) as tmp, open(tmp, "w") as f:
            json.dump(metrics, f, indent=1)
        print(f"written: {out}", file=sys.stderr)
    return 0


def embed_command(argv) -> int:
    p = OneLineParser(
        prog="open-clip-dissect embed",
        description=("Image and text embeddings of a frozen (oracle) CLIP model, keyed by sample; resumable."),
    )
    p.add_argument("--model", required=True, help="OpenCLIP model config (anything create_model takes).")
    p.add_argument("--checkpoint", default=None, help="Local weights file (default: None, random init).")
    p.add_argument("--data", required=True, help="webdataset shards (brace pattern) or a .csv/.tsv.")
    p.add_argument("--out", required=True, help="Output folder (re-running resumes it).")
    p.add_argument("--batch-size", type=int, default=256, help="Batch size (default: 256).")
    p.add_argument("--workers", type=int, default=1, help="Data-loader workers (default: 1).")
    p.add_argument("--device", default="cpu", help="Device (default: cpu).")
    p.add_argument("--precision", default="fp32", help="OpenCLIP precision (default: fp32).")
    p.add_argument(
        "--sample-key",
        choices=("url+key", "key"),
        default="url+key",
        help="Key of a webdataset sample, as in training (default: url+key).",
    )
    p.add_argument("--csv-img-key", default="filepath", help="csv image column (default: filepath).")
    p.add_argument("--csv-caption-key", default="title", help="csv caption column (default: title).")
    p.add_argument("--csv-key-key", default=None, help="csv key column (default: row index).")
    p.add_argument("--csv-separator", default="\t", help="csv separator (default: tab).")
    p.add_argument("--quiet", action="store_true", help="No progress bar (default: show it).")
    p.add_argument(ALLOW_PICKLE_FLAG, action="store_true", help=ALLOW_PICKLE_HELP)
    args = p.parse_args(argv)
    from open_clip_dissect.offline.embeddings import embed

    index = embed(
        args.model,
        args.checkpoint,
        args.data,
        args.out,
        args.batch_size,
        args.workers,
        args.device,
        args.precision,
        args.sample_key,
        args.csv_img_key,
        args.csv_caption_key,
        args.csv_key_key,
        args.csv_separator,
        progress=not args.quiet,
        allow_pickle=args.allow_pickle_checkpoints,
    )
    print(f"{sum(p['count'] for p in index['parts'].values())} samples in {len(index['parts'])} parts: {args.out}")
    return 0


def score_command(argv) -> int:
    from open_clip_dissect.offline import coreset

    p = OneLineParser(
        prog="open-clip-dissect score",
        description=("Scores of every sample from its oracle embeddings, into one parquet (key + a column each)."),
    )
    p.add_argument("--embeddings", required=True, help="Folder written by `embed`.")
    p.add_argument("--scores", nargs="+", required=True, choices=coreset.SCORES, help="Scores to compute.")
    p.add_argument(
        "--target", default=None, help="`embed` folder of the target set (normsim2, normsiminf, vas) (default: None)."
    )
    p.add_argument("--out", required=True, help="Output parquet file.")
    p.add_argument("--clipscore-scale", type=float, default=100.0, help="w of CLIPScore (default: 100).")
    p.add_argument(
        "--negcliploss-batch-size",
        type=int,
        default=32768,
        help="Batch size of the random batchings (default: 32768, as in the paper).",
    )
    p.add_argument(
        "--negcliploss-repeats",
        type=int,
        default=10,
        help="K random batchings averaged (default: 10, as in the paper).",
    )
    p.add_argument(
        "--vas-d-fraction",
        type=float,
        default=0.3,
        help="vas-d: fraction of the pool its rounds end at (default: 0.3).",
    )
    p.add_argument("--vas-d-rounds", type=int, default=5, help="vas-d: rounds (default: 5).")
    p.add_argument(
        "--selection-record",
        default=None,
        help="forgetting: the --selection-record folder of an earlier run (default: None).",
    )
    p.add_argument("--seed", type=int, default=0, help="Seed of the batchings (default: 0).")
    args = p.parse_args(argv)
    from open_clip_dissect.offline.embeddings import load_embeddings

    if "forgetting" in args.scores and not args.selection_record:
        raise InputError("--selection-record", "needed for the forgetting score")
    coreset.check_score_options(
        args.scores,
        args.target is not None,
        args.negcliploss_batch_size,
        args.negcliploss_repeats,
        args.vas_d_fraction,
        args.vas_d_rounds,
    )
    check_output_file(args.out)
    frame, image, text, index = load_embeddings(args.embeddings)
    target = load_embeddings(args.target, flag="--target")[1] if args.target else None
    columns = coreset.compute_scores(
        args.scores,
        image,
        text,
        index["tau"],
        target,
        args.clipscore_scale,
        args.negcliploss_batch_size,
        args.negcliploss_repeats,
        args.vas_d_fraction,
        args.vas_d_rounds,
        args.seed,
    )
    for name, values in columns.items():
        frame[name] = values
    if "forgetting" in args.scores:  # samples the run never scored count 0 events
        events = coreset.forgetting_scores(args.selection_record)
        frame = frame.merge(events, on="key", how="left")
        frame["forgetting"] = frame["forgetting"].fillna(0).astype("int64")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with atomic_output(args.out) as tmp:
        frame.to_parquet(tmp, index=False)
    print(f"{len(frame)} samples scored ({', '.join(args.scores)}): {args.out}")
    return 0


def filter_command(argv) -> int:
    from open_clip_dissect.offline import coreset

    p = OneLineParser(
        prog="open-clip-dissect filter",
        description=(
            "Keep-list by rules applied in order: each keeps the top fraction of the pool size among "
            "the survivors of the previous ones."
        ),
    )
    p.add_argument("--scores", required=True, help="Parquet written by `score`.")
    p.add_argument(
        "--keep",
        action="append",
        required=True,
        metavar="SCORE:FRACTION",
        help="A rule, e.g. negcliploss:0.3; repeat to chain (applied in order).",
    )
    p.add_argument(
        "--out",
        required=True,
        help="Output folder: keys.txt (for --keep-list) and uids.npy (DataComp format) "
        "when the samples carry 32-hex uids.",
    )
    args = p.parse_args(argv)
    rules = coreset.parse_rules(args.keep)
    check_output_folder(args.out)
    frame = coreset.read_scores(args.scores)
    rows = coreset.apply_rules(frame, rules)
    summary = coreset.write_keep_list(frame, rows, args.out)
    print(json.dumps(summary))
    return 0


def train(argv) -> int:
    from open_clip_dissect.openclip.launch.main import main as train_main

    return train_main(argv)


COMMANDS = {
    "train": (train, "train: same as python -m open_clip_dissect.main (OpenCLIP flags + ours)"),
    "make-data": (make_data, "make-data: write a noisy image-text data set (synthetic or Open Clip Art)"),
    "summary": (summary, "summary RUN_DIR: print a run's validation retrieval metrics"),
    "eval": (evaluate, "eval: zero-shot retrieval of a checkpoint, several captions per image"),
    "embed": (embed_command, "embed: a frozen model's embeddings of a data set, keyed by sample"),
    "score": (score_command, "score: clipscore/negcliploss/normsim/vas scores from embeddings"),
    "filter": (filter_command, "filter: a keep-list from score rules (--keep-list for training)"),
}


MODEL_COMMANDS = ("train", "eval", "embed")  # the commands that build a model: the tiny configs registered


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        asked_for_help = bool(argv) and argv[0] in ("-h", "--help")
        stream = sys.stdout if asked_for_help else sys.stderr
        print("usage: open-clip-dissect {" + ",".join(COMMANDS) + "} ...\n", file=stream)
        print("\n".join("  " + help_ for _, help_ in COMMANDS.values()), file=stream)
        if asked_for_help:
            return 0
        what = f"unknown command {argv[0]!r}" if argv else "give a command"
        print(f"open-clip-dissect: error: {what}; choose from {', '.join(COMMANDS)}", file=stream)
        return 2
    command, _ = COMMANDS[argv[0]]
    if argv[0] in MODEL_COMMANDS:  # the others never import open_clip (seconds: CoCa pulls in torchvision)
        register_model_configs()
    try:
        return command(argv[1:])
    except InputError as exn:
        print(f"open-clip-dissect {argv[0]}: error: {exn}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
