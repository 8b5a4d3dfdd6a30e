"""Command-line flags: OpenCLIP's own parser plus the ``open_clip_dissect`` argument group.

The flags are added to the very parser that ``open_clip_train.params.parse_args`` builds, so
``--help`` lists both, unknown flags are still rejected by argparse, and OpenCLIP's own
post-processing (per-model optimizer defaults) runs unchanged.
"""

import argparse
import logging
import math
import os
import types

import open_clip_train.params as upstream_params

from open_clip_dissect.core.scorer import SCORING_MODES
from open_clip_dissect.core.selector import BATCH_MODES, check_clipscore_scale, check_ratio
from open_clip_dissect.core.strategies import (
    RUN_EPOCHS,
    all_options,
    create_strategy,
    list_strategies,
    num_kept,
    strategy_class,
)
from open_clip_dissect.errors import InputError, OneLineParser
from open_clip_dissect.openclip.launch.patching import swapped

SAMPLE_KEY_CHOICES = ("url+key", "key")
GIVEN = "dissect_given_flags"  # namespace attribute: the flags of our group given on the command line


def given_flags(args) -> set:
    return getattr(args, GIVEN, None) or set()


def selection_help() -> str:
    described = "; ".join(f"{name}: {strategy_class(name).summary}" for name in list_strategies())
    return f"Online sample-selection strategy; 'none' trains exactly like stock OpenCLIP. {described} (default: none)."


def own_count_strategies():
    """The strategies that do not read --ratio (they declare their own kept count, or keep all)."""
    return [n for n in list_strategies() if strategy_class(n).variable_kept or strategy_class(n).keeps_all]


def add_dissect_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register this package's flags on ``parser`` (in their own help group)."""
    group = _RecordingGroup(
        parser.add_argument_group(
            "open_clip_dissect",
            "Online sample selection. Every other flag is OpenCLIP's and behaves as upstream.",
        )
    )
    group.add_argument(
        "--selection",
        choices=("none", *list_strategies()),
        default="none",
        help=selection_help(),
    )
    group.add_argument(
        "--ratio",
        type=float,
        default=0.5,
        help="Selection ratio r in (0, 1]: k = max(1, round(r * candidates)) samples are trained "
        "on per step; " + ", ".join(own_count_strategies()) + " set their own counts and ignore "
        "it (default: 0.5).",
    )
    group.add_argument(
        "--selection-batch-mode",
        choices=BATCH_MODES,
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
        "--selection-scoring-mode",
        choices=SCORING_MODES,
        default="eval",
        help="How the no-grad scoring pass runs the model: eval (BatchNorm's running statistics, "
        "no dropout) or train (each candidate batch's own BatchNorm statistics, as the DISSect "
        "authors' code scores; matters for BatchNorm towers such as RN50). Neither mode "
        "changes the running statistics (default: eval).",
    )
    group.add_argument(
        "--clipscore-scale",
        type=float,
        default=100.0,
        help="w in CLIPScore = w * max(cos(image, text), 0) (default: 100).",
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
        "--retrieval-benchmark",
        type=str,
        default=None,
        help="Comma-separated standard test sets (mscoco_captions, flickr30k, flickr8k) evaluated "
        "by CLIP_benchmark every --val-frequency epochs on rank 0, from local files under "
        "--benchmark-root; IR/TR Recall@1/5/10 and R@sum into results.jsonl "
        "(<benchmark>_IR@1, ...), TensorBoard and wandb (<benchmark>/IR@1, ...); needs "
        "pip install 'open_clip_dissect[eval]' (default: None).",
    )
    group.add_argument(
        "--benchmark-root",
        type=str,
        default=None,
        help="Folder of the --retrieval-benchmark sets: ROOT/<benchmark>/ each (as `eval "
        "--dataset-root` takes it), or a path with {benchmark} in it (default: None).",
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
    group.add_argument(
        "--deterministic",
        action="store_true",
        help="The same bits from the same command on any host: pins the CPU kernels to AVX2 on "
        "x86-64 (AVX-512 hosts otherwise round differently) and asks for deterministic CUDA "
        "kernels, at some cost in speed; runs on one machine repeat without it "
        "(docs/determinism.md) (default: off).",
    )
    for option, takers in all_options():  # each strategy's own options (core.strategies)
        default = "None" if option.default is None else option.default
        group.add_argument(
            option.flag,
            type=option.type,
            default=option.default,
            help=f"{', '.join(takers)}: {option.help} (default: {default}).",
        )
    return parser


class _RecordingGroup:
    """An argument group whose flags remember being given (in ``args.dissect_given_flags``), so
    that a flag the chosen strategy does not read can be reported and no default is guessed at."""

    def __init__(self, group):
        self.group = group

    def add_argument(self, *args, **kwargs):
        action = self.group.add_argument(*args, **kwargs)
        action.__class__ = type(f"Given{type(action).__name__}", (_GivenMixin, type(action)), {})
        return action


class _GivenMixin:
    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        if getattr(namespace, GIVEN, None) is None:
            setattr(namespace, GIVEN, set())
        getattr(namespace, GIVEN).add(self.option_strings[0])


def _parser_with_dissect_args():
    """Make ``open_clip_train.params`` build its parser with our group added.

    ``parse_args`` creates its parser as ``argparse.ArgumentParser()`` inside the function, so
    we swap the module's ``argparse`` name for a copy whose ArgumentParser adds our group just
    before parsing. Only that module sees the swap, and only inside this context.
    """

    class _Parser(OneLineParser):
        def parse_args(self, args=None, namespace=None):
            add_dissect_args(self)
            self.prog = "open_clip_dissect"  # its errors: one line, as the entry point's own
            return super().parse_args(args, namespace)

    shim = types.SimpleNamespace(**{**vars(argparse), "ArgumentParser": _Parser})
    return swapped(upstream_params, argparse=shim)


def parse_args(argv):
    """Parse OpenCLIP's flags and ours; validate ours. Mirrors ``open_clip_train.params.parse_args``."""
    with _parser_with_dissect_args():
        args = upstream_params.parse_args(argv)
    validate_args(args)
    return args


# The selecting loader's own flags: with --selection none the step is stock OpenCLIP's and
# nothing reads them (--keep-list and the retrieval flags work without a strategy).
SELECTION_ONLY_FLAGS = (
    "--ratio",
    "--selection-batch-mode",
    "--selection-scope",
    "--selection-scoring-mode",
    "--clipscore-scale",
    "--oracle-model",
    "--oracle-checkpoint",
    "--history-device",
    "--selection-record",
    "--noisy-keys",
    "--selection-reset-history",
)


def validate_args(args) -> None:
    """Fail early, naming the flag (``InputError``), on values and combinations that cannot
    work; warn on flags that do nothing (on slow settings: ``warn_slow_settings``). Each value is
    checked once: the ratio and scale by ``core.selector``, each strategy option by its own
    declaration."""
    log = logging.getLogger(__name__)
    check_ratio(args.ratio)
    check_clipscore_scale(args.clipscore_scale)
    if args.horovod and args.selection != "none":
        # Every strategy's collectives (counts, audit, history shards, exchange) go through
        # torch.distributed, whose process group OpenCLIP never initialises under Horovod.
        raise InputError(
            "--horovod",
            f"--selection {args.selection} needs torch.distributed (launch with "
            f"torchrun or srun without --horovod); Horovod runs only with "
            f"--selection none",
        )
    given = given_flags(args)
    for option, _ in all_options():  # a bad value is an error even for a strategy not chosen
        option.validate(getattr(args, option.dest))
    strategy = create_strategy(**strategy_options(args)) if args.selection != "none" else None
    ignored = sorted(
        option.flag for option, takers in all_options() if option.flag in given and args.selection not in takers
    )
    if ignored:
        log.warning(f"--selection {args.selection} does not read {', '.join(ignored)}: ignored")
    unread = [flag for flag in SELECTION_ONLY_FLAGS if flag in given]
    if args.selection == "none" and unread:
        log.warning(f"--selection none trains as stock OpenCLIP and does not read {', '.join(unread)}: ignored")
    if strategy is not None:
        unused = sorted(
            o.flag
            for o in strategy_class(args.selection).options
            if o.name in strategy.unused_options() and o.flag in given
        )
        if unused:
            log.warning(
                f"--selection {args.selection} ignores {', '.join(unused)} with these settings "
                f"(e.g. the auto detector's flags with a numeric warm-up)"
            )
    if strategy is not None and strategy.variable_kept:
        _check_variable_kept(args, given)
    if strategy is not None and args.selection not in own_count_strategies():
        _check_contrastive_batch(args)
    scoring_flags = [f for f in ("--selection-scoring-mode", "--clipscore-scale") if f in given]
    if strategy is not None and not strategy.needs_scores and not args.selection_record and scoring_flags:
        log.warning(
            f"--selection {args.selection} runs no scoring pass without --selection-record: "
            f"{', '.join(scoring_flags)} ignored"
        )
    if strategy is not None and strategy.keeps_all and "--ratio" in given:
        log.warning(f"--selection {args.selection} trains on every candidate: --ratio is ignored")
    if strategy is not None and strategy.needs_validation_retrieval and not (args.val_data and args.val_frequency):
        missing = "--val-data" if not args.val_data else "--val-frequency"
        raise InputError(
            missing,
            f"{'needed' if missing == '--val-data' else 'must be > 0'} for --selection {args.selection} "
            "with an auto warm-up: its --dissect-auto-signal 'retrieval' (the default) watches the "
            "retrieval R@sum of --val-data (a held-out split, e.g. a slice of the training shards), "
            "evaluated every --val-frequency epochs; it never watches --retrieval-data or "
            "--retrieval-benchmark, whose numbers are reported. Without held-out data pass "
            "--dissect-auto-signal spread or loss",
        )
    if strategy is not None and strategy.needs_oracle:
        if not args.oracle_model or not args.oracle_checkpoint:
            raise InputError("--selection", f"{args.selection} needs --oracle-model and --oracle-checkpoint")
        if not os.path.isfile(args.oracle_checkpoint):
            raise InputError("--oracle-checkpoint", f"not found: {args.oracle_checkpoint}")
    if args.keep_list is not None and not os.path.exists(args.keep_list):
        raise InputError("--keep-list", f"not found: {args.keep_list}")
    if args.retrieval_benchmark or args.benchmark_root:  # files checked now, not after epoch 1
        from open_clip_dissect.openclip.evaluation.benchmark_eval import check_training_args

        check_training_args(args)
    if args.noisy_keys is not None:
        if not os.path.isfile(args.noisy_keys):
            raise InputError("--noisy-keys", f"file not found: {args.noisy_keys}")
        from open_clip_dissect.core.keyset import check_key_file

        check_key_file(args.noisy_keys, "--noisy-keys")
    if args.csv_key_key is not None and args.dataset_type not in ("csv", "auto"):
        raise InputError("--csv-key-key", f"is only used with --dataset-type csv (got {args.dataset_type})")


def warn_slow_settings(args) -> None:
    """Warn on settings that work but slowly. Called once every input is checked, so that a
    command that fails on a bad input prints that one line alone."""
    import torch

    if args.precision == "amp" and not torch.cuda.is_available():
        logging.getLogger(__name__).warning(
            "--precision amp on a CPU device runs fp16 autocast, which is about 14x slower than "
            "fp32 on CPU; pass --precision fp32 for CPU runs."
        )


def strategy_options(args) -> dict:
    """``core.create_strategy`` arguments from the parsed flags: the strategy's own options (and
    the run's epoch count for the strategies that take it)."""
    options = {"name": args.selection}
    for option in strategy_class(args.selection).options:
        options[option.name] = args.epochs if option.flag is None else getattr(args, option.dest)
    return options


def selection_fingerprint(args) -> dict:
    """What a resumed run must share with the run that wrote the selection state: what changes
    its decisions, not flags its settings ignore (its run-length option, ``--epochs``, may grow;
    the world size may change: elastic resume)."""
    options = strategy_options(args)
    unused = set(create_strategy(**options).unused_options()) | {"name", RUN_EPOCHS.name}
    out = {
        "selection": args.selection,
        "options": {k: v for k, v in options.items() if k not in unused},
        "selection_batch_mode": args.selection_batch_mode,
        "selection_scope": args.selection_scope,
        "seed": args.seed,
        "world_size": args.world_size,
    }
    if strategy_class(args.selection).needs_scores:  # random's draw never reads a score
        out["selection_scoring_mode"] = args.selection_scoring_mode
        out["clipscore_scale"] = args.clipscore_scale
    if args.selection not in own_count_strategies():
        out["ratio"] = args.ratio
    return out


def _check_contrastive_batch(args) -> None:
    """A contrastive step needs at least two kept pairs on each process (one pair has no
    negative: its loss is 0 and nothing is learned). ``shrink`` keeps ``k = max(1, round(ratio x
    --batch-size))`` of the per-process batch; ``fixed`` trains on ``--batch-size``."""
    batch = args.batch_size
    kept = num_kept(batch, args.ratio) if args.selection_batch_mode == "shrink" else batch
    if kept >= 2:
        return
    if args.selection_batch_mode == "fixed":
        raise InputError(
            "--batch-size",
            f"{batch} with --selection-batch-mode fixed trains {batch} pair a step; a contrastive "
            "step needs at least 2",
        )
    need = math.ceil(1.5 / args.ratio)  # round(ratio x need) >= 2; checked, as round() halves to even
    while num_kept(need, args.ratio) < 2:
        need += 1
    raise InputError(
        "--batch-size",
        f"{batch} with --ratio {args.ratio} keeps {kept} pair a step (k = max(1, round(ratio x batch)) per "
        f"process); a contrastive step needs at least 2: use --batch-size {need} or more, or a larger --ratio",
    )


def _check_variable_kept(args, given: set) -> None:
    """infobatch and scan keep a random number of samples and weight their losses: that needs
    OpenCLIP's plain contrastive loss (``WeightedClipLoss``) and per-rank decisions."""
    name = f"--selection {args.selection}"
    if args.selection_batch_mode != "shrink":
        raise InputError("--selection-batch-mode", f"{name} keeps a random number of samples; it needs shrink")
    if args.selection_scope != "local":
        raise InputError("--selection-scope", f"{name} decides sample by sample; it needs local")
    for flag, used in (
        ("--distill-model", args.distill_model),
        ("--siglip", args.siglip),
        ("a CoCa --model", "coca" in args.model.lower()),
    ):
        if used:
            raise InputError(
                "--selection", f"{args.selection} weights OpenCLIP's CLIP loss per sample; it does not support {flag}"
            )
    if "--ratio" in given:
        logging.getLogger(__name__).warning(f"{name} ignores --ratio (it sets its own counts)")
