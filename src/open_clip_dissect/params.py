"""Command-line flags: OpenCLIP's own parser plus the ``open_clip_dissect`` argument group.

The flags are added to the very parser that ``open_clip_train.params.parse_args`` builds, so
``--help`` lists both, unknown flags are still rejected by argparse, and OpenCLIP's own
post-processing (per-model optimizer defaults) runs unchanged.
"""
import argparse
import logging
import os
import types

import open_clip_train.params as upstream_params

from open_clip_dissect.patching import swapped

from open_clip_dissect.strategies import ORACLE_STRATEGIES, STRATEGIES, make_strategy

SELECTION_CHOICES = ("none",) + STRATEGIES + ORACLE_STRATEGIES
SAMPLE_KEY_CHOICES = ("url+key", "key")


def add_dissect_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register this package's flags on ``parser`` (in their own help group)."""
    group = parser.add_argument_group(
        "open_clip_dissect",
        "Online sample selection. Every other flag is OpenCLIP's and behaves as upstream.",
    )
    group.add_argument(
        "--selection",
        choices=SELECTION_CHOICES,
        default="none",
        help="Online sample-selection strategy; 'none' trains exactly like stock OpenCLIP. "
             "random: a uniform k; small-loss/big-loss: the k smallest/largest per-sample InfoNCE; "
             "clipscore: the k highest CLIPScores of the model being trained; dissect-warmup / "
             "dissect-mome: DISSect with a warm-up or a momentum history; infobatch: InfoBatch's soft "
             "pruning of below-mean-loss samples with loss rescaling; scan: SCAN's bootstrapped "
             "pruning of the highest- and lowest-loss pairs; divbs: diversified batch selection "
             "(greedy orthogonal coverage of the batch's gradients); clipscore-oracle: the k "
             "highest CLIPScores of a frozen --oracle-model; learnability: the k highest "
             "learner-minus-reference losses, the reference being --oracle-model (RHO-LOSS/JEST) "
             "(default: none).",
    )
    group.add_argument(
        "--ratio",
        type=float,
        default=0.5,
        help="Selection ratio r in (0, 1]: k = max(1, round(r * candidates)) samples are trained "
             "on per step; infobatch and scan set their own (random) counts and ignore it "
             "(default: 0.5).",
    )
    group.add_argument(
        "--selection-batch-mode",
        choices=("shrink", "fixed"),
        default="shrink",
        help="shrink: draw --batch-size candidates, train on r of them (the paper's setting); "
             "fixed: draw ceil(--batch-size / r) candidates and train on --batch-size, keeping "
             "the contrastive batch size (default: shrink).",
    )
    group.add_argument(
        "--selection-scope",
        choices=("local", "global"),
        default="local",
        help="local: each rank keeps the top k of its own batch (the paper's setting); global: "
             "the ranks rank the gathered global batch, keep k x world samples and exchange them "
             "so every rank trains on k (default: local).",
    )
    group.add_argument(
        "--clipscore-scale",
        type=float,
        default=100.0,
        help="w in CLIPScore = w * max(cos(image, text), 0) (default: 100).",
    )
    group.add_argument(
        "--dissect-warmup-epochs",
        type=int,
        default=5,
        help="dissect-warmup: epochs of random selection that record each sample's CLIPScore "
             "as its history (default: 5).",
    )
    group.add_argument(
        "--dissect-momentum",
        type=float,
        default=0.9,
        help="dissect-mome: beta in hist <- beta * hist + (1 - beta) * curr, in [0, 1) "
             "(default: 0.9).",
    )
    group.add_argument(
        "--infobatch-prune",
        type=float,
        default=0.5,
        help="infobatch: probability of dropping a sample whose last loss is below the mean; "
             "kept ones of those are weighted 1 / (1 - p), in [0, 1) (default: 0.5).",
    )
    group.add_argument(
        "--infobatch-anneal",
        type=float,
        default=0.125,
        help="infobatch: final fraction of the epochs trained without pruning (default: 0.125).",
    )
    group.add_argument(
        "--scan-nominate",
        type=float,
        default=0.3,
        help="scan: fraction of each candidate batch with the highest (and the lowest) loss that "
             "a preparation epoch nominates for pruning, in (0, 0.5] (default: 0.3).",
    )
    group.add_argument(
        "--scan-warmup-improvement",
        type=float,
        default=0.3,
        help="scan: full-data warm-up lasts until an epoch's mean loss improves on the previous "
             "one by less than this relative amount (default: 0.3).",
    )
    group.add_argument(
        "--scan-warmup-epochs",
        type=int,
        default=None,
        help="scan: a fixed number of warm-up epochs instead of the loss criterion "
             "(default: None, the criterion).",
    )
    group.add_argument(
        "--oracle-model",
        type=str,
        default=None,
        help="clipscore-oracle / learnability: the frozen oracle's (reference model's) OpenCLIP "
             "config; it must take the training images as they are (same image size) "
             "(default: None).",
    )
    group.add_argument(
        "--oracle-checkpoint",
        type=str,
        default=None,
        help="clipscore-oracle / learnability: local weights file of the oracle; nothing is "
             "downloaded (default: None).",
    )
    group.add_argument(
        "--allow-pickle-checkpoints",
        action="store_true",
        default=False,
        help="Load --oracle-checkpoint with full unpickling, for legacy checkpoints that store "
             "Python objects besides tensors; this runs any code the file carries, so use it "
             "only for files you trust, and a warning names the file (default: off, checkpoints "
             "are read with torch.load(weights_only=True)).",
    )
    group.add_argument(
        "--history-device",
        type=str,
        default="cpu",
        help="Device holding the per-sample history (16 bytes a sample) (default: cpu).",
    )
    group.add_argument(
        "--selection-record",
        type=str,
        default=None,
        help="Directory for per-epoch parquet records of every decision (key, epoch, curr, hist, "
             "delta, kept, noisy) and a PNG of the score distributions (default: None, off).",
    )
    group.add_argument(
        "--noisy-keys",
        type=str,
        default=None,
        help="Text file of known-noisy sample keys, one per line, for the noise audit (all other "
             "keys count as clean); overrides the 'noisy' field of the samples' .json "
             "(default: None).",
    )
    group.add_argument(
        "--selection-reset-history",
        action="store_true",
        default=False,
        help="With --resume: start the selection history afresh instead of restoring it from "
             "the checkpoint's .dissect-state file (default: off).",
    )
    group.add_argument(
        "--retrieval-data",
        type=str,
        default=None,
        help="Zero-shot retrieval data with several captions per image (webdataset shards or a "
             "csv), evaluated every --val-frequency epochs: IR/TR Recall@1/5/10 and R@sum into "
             "results.jsonl, TensorBoard and wandb (default: None).",
    )
    group.add_argument(
        "--keep-list",
        type=str,
        default=None,
        help="Train only on the samples whose keys are listed (a file with one key per line, or "
             "the folder `open-clip-dissect filter` wrote); other samples are skipped before "
             "decoding, and without --train-num-samples an epoch is one pass over the list "
             "(default: None, all samples).",
    )
    group.add_argument(
        "--sample-key",
        choices=SAMPLE_KEY_CHOICES,
        default="url+key",
        help="How a webdataset sample is named in the selection history: 'url+key' is "
             "'<shard url>/<__key__>' (unique even when two data sets reuse keys); 'key' is the "
             "bare __key__ (use when keys are globally unique and shard paths may move between "
             "runs) (default: url+key).",
    )
    group.add_argument(
        "--csv-key-key",
        type=str,
        default=None,
        help="For csv data sets, the column holding each sample's key; without it the row "
             "index is the key (default: None, the row index).",
    )
    return parser


def _parser_with_dissect_args():
    """Make ``open_clip_train.params`` build its parser with our group added.

    ``parse_args`` creates its parser as ``argparse.ArgumentParser()`` inside the function, so
    we swap the module's ``argparse`` name for a copy whose ArgumentParser adds our group just
    before parsing. Only that module sees the swap, and only inside this context.
    """

    class _Parser(argparse.ArgumentParser):
        def parse_args(self, args=None, namespace=None):
            add_dissect_args(self)
            return super().parse_args(args, namespace)

    shim = types.SimpleNamespace(**{**vars(argparse), "ArgumentParser": _Parser})
    return swapped(upstream_params, argparse=shim)


def parse_args(argv):
    """Parse OpenCLIP's flags and ours; validate ours. Mirrors ``open_clip_train.params.parse_args``."""
    with _parser_with_dissect_args():
        args = upstream_params.parse_args(argv)
    validate_args(args)
    return args


def validate_args(args) -> None:
    """Fail early, naming the flag, on combinations that cannot work; warn on slow ones."""
    if not 0.0 < args.ratio <= 1.0:
        raise SystemExit(f"--ratio must be in (0, 1], got {args.ratio}")
    if not 0.0 <= args.dissect_momentum < 1.0:
        raise SystemExit(f"--dissect-momentum must be in [0, 1), got {args.dissect_momentum}")
    if args.dissect_warmup_epochs < 0:
        raise SystemExit(f"--dissect-warmup-epochs must be >= 0, got {args.dissect_warmup_epochs}")
    try:
        strategy = make_strategy(**strategy_options(args)) if args.selection != "none" else None
    except ValueError as error:
        raise SystemExit(str(error))
    if strategy is not None and strategy.variable_kept:
        _check_variable_kept(args)
    if args.selection in ORACLE_STRATEGIES:
        if not args.oracle_model or not args.oracle_checkpoint:
            raise SystemExit(f"--selection {args.selection} needs --oracle-model and --oracle-checkpoint")
        if not os.path.isfile(args.oracle_checkpoint):
            raise SystemExit(f"--oracle-checkpoint: not found: {args.oracle_checkpoint}")
    if args.keep_list is not None and not os.path.exists(args.keep_list):
        raise SystemExit(f"--keep-list: not found: {args.keep_list}")
    if args.noisy_keys is not None and not os.path.isfile(args.noisy_keys):
        raise SystemExit(f"--noisy-keys: file not found: {args.noisy_keys}")
    if args.clipscore_scale <= 0:
        raise SystemExit(f"--clipscore-scale must be > 0, got {args.clipscore_scale}")
    if args.csv_key_key is not None and args.dataset_type not in ("csv", "auto"):
        raise SystemExit(f"--csv-key-key is only used with --dataset-type csv (got {args.dataset_type}).")
    import torch

    if args.precision == "amp" and not torch.cuda.is_available():
        logging.getLogger(__name__).warning(
            "--precision amp on a CPU device runs fp16 autocast, which is about 14x slower than "
            "fp32 on CPU; pass --precision fp32 for CPU runs.")


def strategy_options(args) -> dict:
    """``strategies.make_strategy`` keyword arguments from the parsed flags."""
    return dict(name=args.selection, momentum=args.dissect_momentum, warmup_epochs=args.dissect_warmup_epochs,
                epochs=args.epochs, infobatch_prune=args.infobatch_prune, infobatch_anneal=args.infobatch_anneal,
                scan_nominate=args.scan_nominate, scan_warmup_improvement=args.scan_warmup_improvement,
                scan_warmup_epochs=args.scan_warmup_epochs)


def _check_variable_kept(args) -> None:
    """infobatch and scan keep a random number of samples and weight their losses: that needs
    OpenCLIP's plain contrastive loss (``WeightedClipLoss``) and per-rank decisions."""
    name = f"--selection {args.selection}"
    if args.selection_batch_mode != "shrink":
        raise SystemExit(f"{name} keeps a random number of samples; it needs --selection-batch-mode shrink")
    if args.selection_scope != "local":
        raise SystemExit(f"{name} decides sample by sample; it needs --selection-scope local")
    for flag, used in (("--distill-model", args.distill_model), ("--siglip", args.siglip),
                       ("a CoCa --model", "coca" in args.model.lower()), ("--horovod", args.horovod)):
        if used:
            raise SystemExit(f"{name} weights OpenCLIP's CLIP loss per sample; it does not support {flag}")
    if args.ratio != 0.5:
        logging.getLogger(__name__).warning(f"{name} ignores --ratio (it sets its own counts)")
