"""The training-loop adapter: OpenCLIP's ``train_one_epoch`` fed from a key-carrying loader.

Upstream's loop unpacks ``images, texts = batch``; our loaders yield ``(images, texts, keys,
hashes, noisy)`` (``pipeline.keyed_data``). ``TrainingSession`` builds the selector, history
store and exchange for the run, and its ``train_one_epoch`` hands upstream a view of the loader
that yields what upstream expects: with ``--selection none`` every batch as is (so every step is
OpenCLIP's own), otherwise the kept part of every candidate batch
(``training.selecting_loader.SelectingLoader``). After the epoch it writes the selection state,
the audit and the records, and feeds the early-learning detector.
"""

import dataclasses
import json
import logging
import math
import os
import time

import open_clip_train.train as upstream_train
import torch
from open_clip import get_input_dtype
from open_clip.loss import ClipLoss
from open_clip_train.precision import get_autocast

from open_clip_dissect.core.audit import NoisyKeyList, audit
from open_clip_dissect.core.epoch_decisions import EpochDecisions
from open_clip_dissect.core.history import HistoryStore
from open_clip_dissect.core.selector import Selector
from open_clip_dissect.core.strategies import create_strategy, strategy_class
from open_clip_dissect.distributed.communicator import Communicator
from open_clip_dissect.distributed.exchange import RankExchange
from open_clip_dissect.distributed.sharded_history import ShardedHistoryStore
from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.evaluation.benchmark_eval import evaluate_benchmarks
from open_clip_dissect.openclip.evaluation.retrieval import evaluate_retrieval
from open_clip_dissect.openclip.launch import determinism, params
from open_clip_dissect.openclip.launch.crash_points import kill_if_asked
from open_clip_dissect.openclip.models.frozen import load_frozen_model
from open_clip_dissect.openclip.pipeline import keyed_data as data_lib
from open_clip_dissect.openclip.state.state_files import (
    checkpoint_epoch,
    collect_stale_states,
    epoch_state_path,
    find_state,
    restore_selector,
    save_state,
    state_files,
)
from open_clip_dissect.openclip.training import selection_record as record_lib
from open_clip_dissect.openclip.training.selecting_loader import LoaderConfig, SelectingLoader, report
from open_clip_dissect.openclip.training.weighted_loss import LossWeights, WeightedClipLoss

log = logging.getLogger(__name__)


def candidates_per_step(args) -> int:
    """Candidates the training loader draws per step: B, or ceil(B / r) in ``fixed`` batch mode
    so that B are trained on; a strategy that trains on every candidate (``observe``) draws B."""
    if args.selection == "none" or args.selection_batch_mode != "fixed" or strategy_class(args.selection).keeps_all:
        return args.batch_size
    return math.ceil(args.batch_size / args.ratio)


class WithoutKeys:
    """Iterable over a keyed loader that yields ``(images, texts)``; keeps the loader's
    ``num_batches``/``num_samples`` that upstream reads for its schedule and logs."""

    def __init__(self, loader):
        self.loader = loader
        self.num_batches = loader.num_batches
        self.num_samples = loader.num_samples

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        for images, texts, *_ in self.loader:
            yield images, texts


def load_oracle(args):
    """The frozen oracle of ``clipscore-oracle``, on the training device and precision."""
    oracle, _, _ = load_frozen_model(
        args.oracle_model,
        args.oracle_checkpoint,
        args.device,
        args.precision,
        flag="--oracle-checkpoint",
        allow_pickle=args.allow_pickle_checkpoints,
    )
    log.info(f"Oracle {args.oracle_model} loaded from {args.oracle_checkpoint}")
    return oracle


class TrainingSession:
    """Per-run glue between OpenCLIP's ``main`` and the selection engine; its ``get_data`` and
    ``train_one_epoch`` replace upstream's for the run."""

    def __init__(self):
        self.args = None  # the run's flags, from its first epoch on
        self.selector = None
        self.noisy_keys = None
        self.preprocess_val = self.tokenizer = None
        self.train_seconds = 0.0  # wall-clock inside training epochs (evaluation excluded)
        self.oracle = None
        self.loss_weights = self.weighted_loss = None  # for strategies that weight the loss
        self.plotted_at = time.monotonic()  # when distributions.png was last drawn (or the run began)

    def get_data(self, args, preprocess_fns, epoch=0, tokenizer=None):
        """Key-carrying data; in ``fixed`` batch mode the training loader draws ceil(B / r)
        candidates per step so that B samples are trained on."""
        self.preprocess_val, self.tokenizer = preprocess_fns[1], tokenizer
        logging.info(determinism.settle(args.deterministic))
        args.selection_candidates = candidates_per_step(args)
        return data_lib.get_data(args, preprocess_fns, epoch, tokenizer, train_batch_size=args.selection_candidates)

    def train_one_epoch(self, model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer=None):
        """Same signature as ``open_clip_train.train.train_one_epoch`` (open_clip_torch 3.3.0)."""
        kill_if_asked("after-checkpoint", epoch - 1, 0, args.rank)  # crash tests only
        self.args = args
        started = time.perf_counter()
        train = data["train"]
        if args.selection == "none":
            view = WithoutKeys(train.dataloader)
        else:
            if self.selector is None:
                self.selector = self._start(args, epoch)
            record = EpochDecisions(keep_keys=bool(args.selection_record))
            if self.selector.strategy.variable_kept:
                loss = self._weighted(loss, args)
            view = SelectingLoader(
                train.dataloader,
                self.selector,
                model,
                LoaderConfig.from_args(args),
                epoch,
                record,
                tb_writer,
                self.noisy_keys,
                self.oracle,
                self.loss_weights,
            )
        upstream_train.train_one_epoch(
            model,
            {**data, "train": dataclasses.replace(train, dataloader=view)},
            loss,
            epoch,
            optimizer,
            scaler,
            scheduler,
            dist_model,
            args,
            tb_writer=tb_writer,
        )
        self.train_seconds += time.perf_counter() - started  # records and state files excluded
        completed = epoch + 1
        # Before the selection's epoch end: a strategy may watch the validation retrieval score
        # (--dissect-auto-signal retrieval), and the state saved there must include what it saw.
        if args.rank == 0 and args.val_frequency and (completed % args.val_frequency == 0 or completed == args.epochs):
            steps_per_epoch = view.num_batches // args.accum_freq
            if args.retrieval_data:
                self._evaluate_retrieval(model, args, completed, steps_per_epoch, tb_writer)
            if args.retrieval_benchmark:
                for name, metrics in evaluate_benchmarks(model, self.preprocess_val, self.tokenizer, args).items():
                    self._report_retrieval(name, metrics, args, completed, steps_per_epoch, tb_writer)
            if self.selector is not None and self.selector.strategy.needs_validation_retrieval:
                # Only --val-data: a detector that watched a reported split would choose its
                # switching epoch by looking at the numbers it is judged on.
                self.selector.set_retrieval(self._watched_retrieval(model, args, completed))
        if args.selection != "none":
            self._end_epoch(args, epoch, view, record, tb_writer)
            kill_if_asked("after-state", epoch, 0, args.rank)  # crash tests only

    def _weighted(self, loss, args):
        """OpenCLIP's ``ClipLoss`` (built by ``create_loss``) as a ``WeightedClipLoss``."""
        if self.weighted_loss is None:
            if type(loss) is not ClipLoss:
                raise InputError(
                    "--selection",
                    f"{args.selection} weights the CLIP loss per sample; this run's loss is {type(loss).__name__}",
                )
            self.loss_weights = LossWeights(args.accum_freq)
            self.weighted_loss = WeightedClipLoss.like(loss, self.loss_weights)
        return self.weighted_loss

    def _evaluate_retrieval(self, model, args, completed, steps_per_epoch, tb_writer):
        """Multi-caption retrieval of --retrieval-data after an epoch, reported (never watched)."""
        device = torch.device(args.device)
        metrics = evaluate_retrieval(
            model,
            self.preprocess_val,
            self.tokenizer,
            args.retrieval_data,
            device,
            args.batch_size,
            get_autocast(args.precision, device_type=device.type),
            get_input_dtype(args.precision),
            img_key=args.csv_img_key,
            caption_key=args.csv_caption_key,
            sep=args.csv_separator,
        )
        self._report_retrieval("retrieval", metrics, args, completed, steps_per_epoch, tb_writer)
        return metrics["R@sum"]

    def _watched_retrieval(self, model, args, completed):
        """R@sum of --val-data (one caption per image suffices), for the early-learning detector."""
        device = torch.device(args.device)
        metrics = evaluate_retrieval(
            model,
            self.preprocess_val,
            self.tokenizer,
            args.val_data,
            device,
            args.batch_size,
            get_autocast(args.precision, device_type=device.type),
            get_input_dtype(args.precision),
            img_key=args.csv_img_key,
            caption_key=args.csv_caption_key,
            sep=args.csv_separator,
        )
        log.info(
            f"early-learning detector: --val-data R@sum {metrics['R@sum']:.2f} after epoch {completed} "
            f"({args.val_data}; the detector watches this split only)"
        )
        return metrics["R@sum"]

    def _report_retrieval(self, source, metrics, args, completed, steps_per_epoch, tb_writer):
        """Log, TensorBoard (``<source>/IR@1``), wandb and ``results.jsonl`` (``<source>_IR@1``);
        ``source`` is ``retrieval`` (--retrieval-data) or a benchmark's name."""
        log.info(f"{source} epoch {completed}: " + " ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
        if tb_writer is not None:
            for name, value in metrics.items():
                tb_writer.add_scalar(f"{source}/{name}", value, completed)
        report(args.wandb, None, {f"{source}/{k}": v for k, v in metrics.items()}, steps_per_epoch * completed)
        if args.save_logs:
            with open(os.path.join(args.checkpoint_path, "results.jsonl"), "a+") as f:
                f.write(
                    json.dumps(
                        {
                            "epoch": completed,
                            "train_seconds": self.train_seconds,
                            **{f"{source}_{k}": v for k, v in metrics.items()},
                        }
                    )
                    + "\n"
                )

    def _start(self, args, epoch):
        strategy = create_strategy(**params.strategy_options(args))
        comm = Communicator(
            args.rank,
            args.world_size,  # NCCL needs CUDA tensors, gloo CPU ones
            device=args.device if torch.device(args.device).type == "cuda" else "cpu",
        )
        store = ShardedHistoryStore(HistoryStore(args.history_device), comm)
        exchange = None
        if args.selection_scope == "global" and args.world_size > 1:
            exchange = RankExchange(comm)
        # Global scope: every rank takes the same decision, so the RNG is seeded alike.
        seed = args.seed if exchange is not None else args.seed + args.rank
        selector = Selector(
            strategy,
            args.ratio,
            seed,
            batch_mode=args.selection_batch_mode,
            train_batch_size=args.batch_size,
            store=store,
            comm=comm,
            exchange=exchange,
            clipscore_scale=args.clipscore_scale,
        )
        if strategy.needs_oracle:
            self.oracle = load_oracle(args)
        if args.noisy_keys:
            self.noisy_keys = NoisyKeyList(args.noisy_keys)
            log.info(f"Noise audit: {len(self.noisy_keys)} noisy keys listed in {args.noisy_keys}")
        resumed = args.resume is not None and epoch > 0
        if resumed and not args.selection_reset_history:
            base = find_state(args.resume, epoch)  # the state of the checkpoint's own epoch
            files = state_files(base)
            restore_selector(selector, files, args.rank, params.selection_fingerprint(args))
            log.info(
                f"Selection state of epoch {epoch} restored from {len(files)} rank file(s) of {base} "
                f"({len(selector.store)} samples in this rank's history)"
            )
        self.collect_stale_states(args)
        return selector

    def collect_stale_states(self, args) -> None:
        """Rank 0 deletes the state files no checkpoint needs any more (at start-up, at each
        epoch's end and after the run, never before the superseding checkpoint exists)."""
        if args.rank != 0 or not args.logs or args.logs.lower() == "none":
            return
        latest = os.path.join(args.checkpoint_path, "epoch_latest.pt")
        latest_epoch = checkpoint_epoch(latest) if os.path.exists(latest) else None
        for base in collect_stale_states(args.checkpoint_path, latest_epoch):
            log.info(f"Removed the selection state {base} (no checkpoint needs it any more)")

    def _end_epoch(self, args, epoch, view, record, tb_writer):
        """Every rank: its record file, the state files and the collectives of the audit and the
        counts; rank 0: the logs and the plot."""
        columns = record.columns()
        completed = epoch + 1
        comm = self.selector.comm
        if args.selection_record:  # before the collectives below: they tell rank 0 all files exist
            record_lib.write_epoch(args.selection_record, epoch, record.keys, columns, args.rank, args.world_size)
        candidates, kept, history_size = comm.all_reduce_sum(
            torch.tensor([view.candidates_seen, view.trained, len(self.selector.store)], dtype=torch.int64)
        ).tolist()
        summary = {
            "epoch": completed,
            "selection": args.selection,
            "ratio": args.ratio,
            "candidates": candidates,
            "kept": kept,
            "time_scoring": view.time_scoring,
            "time_training": view.time_training,
            "history_size": history_size,
        }
        event = self.selector.end_epoch()  # every rank: one all-reduce
        summary.update(self.selector.last_signals.as_dict())
        summary.update(self.selector.strategy.status())
        if args.logs and args.logs.lower() != "none":
            self._save_state(args, completed)  # every rank writes its own file
        noise_audit = audit(columns["delta"], columns["kept"], columns["noisy"], comm)  # every rank
        if args.rank != 0:
            return
        if event:
            log.info(f"Selection {args.selection}: {event}")
        summary.update({f"audit_{k}": v for k, v in noise_audit.items()})
        if "audit_kept_precision" in summary:
            log.info(
                f"Selection audit epoch {epoch}: kept-set precision {summary['audit_kept_precision']:.3f} "
                f"(random would keep {summary['audit_random_precision']:.3f}), clean recall "
                f"{summary['audit_clean_recall']:.3f}, AUROC {summary['audit_auroc']:.3f}"
            )
        steps = view.num_batches // args.accum_freq
        report(
            args.wandb,
            tb_writer,
            {f"selection_epoch/{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and k != "epoch"},
            steps * completed,
        )
        if args.save_logs:
            with open(os.path.join(args.logs, args.name, "selection.jsonl"), "a") as f:
                f.write(json.dumps(summary) + "\n")
        if args.selection_record and record_lib.plot_due(completed, args.epochs, time.monotonic() - self.plotted_at):
            record_lib.plot_distributions(args.selection_record)
            self.plotted_at = time.monotonic()

    def _save_state(self, args, completed):
        """The state of this epoch, for every checkpoint ``open_clip_train.main`` writes after it
        (``epoch_N.pt`` and/or ``epoch_latest.pt``): always ``epoch_N.dissect-state``, whose
        recorded epoch pairs it with either. Older states go only once no checkpoint needs them."""
        if (
            completed == args.epochs
            or args.save_most_recent
            or (args.save_frequency > 0 and completed % args.save_frequency == 0)
        ):
            save_state(
                epoch_state_path(args.checkpoint_path, completed),
                self.selector.state_dict(),
                args.rank,
                args.world_size,
                epoch=completed,
                fingerprint=params.selection_fingerprint(args),
            )
        self.collect_stale_states(args)
