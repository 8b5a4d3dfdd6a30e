"""Select-then-backprop: the selection engine and its OpenCLIP adapter.

``Selector`` (strategy + history store + RNG) decides which samples of a candidate batch to
keep. ``SelectingLoader`` wraps the key-carrying training loader: for each candidate batch it
runs a no-grad scoring pass of the model being trained (eval mode, so BatchNorm statistics and
dropout are untouched; same autocast as training), asks the selector, and hands OpenCLIP's own
``train_one_epoch`` only the kept ``(images, texts)``. Gradient accumulation, distillation,
gradient checkpointing, the LR schedule and logging all stay upstream's.
"""
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from open_clip import get_input_dtype
from open_clip_train.precision import get_autocast

from open_clip_dissect.atomic import atomic_output
from open_clip_dissect import audit as audit_lib
from open_clip_dissect.errors import InputError
from open_clip_dissect import strategies
from open_clip_dissect.exchange import RankExchange
from open_clip_dissect.history import HistoryStore, hash_keys
from open_clip_dissect.sharded_history import ShardedHistoryStore, rank_file, saved_rank_files
from open_clip_dissect.weighted_loss import LossWeights

log = logging.getLogger(__name__)
STATE_SUFFIX = ".dissect-state"  # never ".pt": OpenCLIP's --resume latest globs *.pt
STATE_FORMAT = 1


class Selector:
    """Strategy + history + RNG: ranks one candidate batch and updates the history."""

    def __init__(self, strategy: strategies.Strategy, ratio: float, batch_mode: str = "shrink",
                 train_batch_size: Optional[int] = None, store: Optional[ShardedHistoryStore] = None,
                 seed: int = 0, clipscore_scale: float = 100.0, exchange: Optional[RankExchange] = None):
        """``exchange`` set: global scope; every rank ranks the gathered global batch (the RNG
        must then be seeded the same on every rank) and keeps ``k x world`` samples."""
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"--ratio must be in (0, 1], got {ratio}")
        self.strategy, self.ratio, self.batch_mode = strategy, ratio, batch_mode
        self.train_batch_size = train_batch_size
        self.store = store if store is not None else ShardedHistoryStore(HistoryStore())
        self.generator = torch.Generator().manual_seed(seed)
        self.clipscore_scale = clipscore_scale
        self.exchange = exchange
        if exchange is not None and strategy.variable_kept:
            raise ValueError(f"--selection {strategy.name} keeps a random number of samples per rank; "
                             f"it needs --selection-scope local")
        self._loss_total = None  # [sum, count] of this epoch's scoring-pass losses on this rank

    def num_kept(self, candidates: int) -> int:
        if self.batch_mode == "fixed":
            return min(candidates, self.train_batch_size)
        return strategies.num_kept(candidates, self.ratio)

    def begin_epoch(self, epoch: int) -> None:
        """Epoch-level inputs of the strategy (InfoBatch: the mean stored score, all ranks)."""
        mean = self.store.mean_score() if self.strategy.needs_history_mean else None
        self.strategy.begin_epoch(epoch, mean)
        self._loss_total = None

    def end_epoch(self, epoch: int) -> None:
        """Hand the strategy the epoch's mean scoring-pass loss over every rank (SCAN's warm-up)."""
        mean = None
        if self.strategy.needs_epoch_loss:
            local = self._loss_total if self._loss_total is not None else torch.zeros(2, dtype=torch.float64)
            total, count = self.store.all_reduce_sum(local.cpu()).tolist()
            mean = total / count if count else None
        self.strategy.end_epoch(epoch, mean)
        self._loss_total = None

    def decide(self, hashes: torch.Tensor, scores: strategies.BatchScores, epoch: int) -> strategies.Decision:
        history = None
        if self.strategy.needs_history:
            seen, score, _, _ = self.store.get(hashes)
            history = strategies.History(score.to(scores.curr.device), seen.to(scores.curr.device))
        if self.exchange is None:
            decision = self.strategy.decide(scores, history, self.num_kept(len(hashes)), epoch, self.generator)
        else:
            decision = self._decide_global(len(hashes), scores, history, epoch)
        if self.strategy.needs_history and decision.new_history is not None:
            self.store.update(hashes, decision.new_history, epoch, decision.store_mask)
        if self.strategy.needs_epoch_loss:  # summed on the device: no sync per batch
            batch = torch.stack([scores.loss.double().sum(), torch.tensor(
                float(len(scores.loss)), dtype=torch.float64, device=scores.loss.device)])
            self._loss_total = batch if self._loss_total is None else self._loss_total + batch
        return decision

    def _decide_global(self, n, scores, history, epoch):
        """Rank the gathered global batch; return this rank's rows (``kept``: its candidates
        that were kept globally, any number; ``SelectingLoader`` rebalances)."""
        ex = self.exchange
        g_scores = strategies.BatchScores(**{f: ex.gather(v) for f, v in scores.fields().items()})
        g_history = None if history is None else strategies.History(
            ex.gather(history.score), ex.gather(history.seen))
        g = self.strategy.decide(g_scores, g_history, self.num_kept(n) * ex.world_size, epoch, self.generator)
        bad = torch.isnan(g.rank).nonzero()
        if len(bad) and int(bad[0, 0]) // n != ex.rank:  # the owning rank names the sample
            raise FloatingPointError(f"NaN selection score on rank {int(bad[0, 0]) // n}")
        rows = slice(ex.rank * n, (ex.rank + 1) * n)
        kept = torch.zeros(len(g.rank), dtype=torch.bool, device=g.rank.device)
        kept[g.kept] = True
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return strategies.Decision(kept[rows].nonzero().squeeze(1), g.rank[rows], g.hist[rows],
                                   pick(g.new_history), pick(g.store_mask))

    def state_dict(self) -> dict:
        return {"strategy": self.strategy.name, "ratio": self.ratio, "batch_mode": self.batch_mode,
                "store": self.store.state_dict(), "generator": self.generator.get_state(),
                "strategy_state": self.strategy.state_dict()}

    def check_strategy(self, state: dict, source: str) -> None:
        if state.get("strategy") != self.strategy.name:
            raise InputError("--resume", f"{source} holds selection state of strategy "
                             f"{state.get('strategy')!r}, but --selection is {self.strategy.name!r}")

    def load_state_dict(self, state: dict, source: str = "state") -> None:
        self.check_strategy(state, source)
        self.store.load_state_dict(state["store"])
        self.generator.set_state(state["generator"])
        self.strategy.load_state_dict(state.get("strategy_state", {}))

    def load_state_files(self, files: list, rank: int) -> None:
        """Resume from the rank files of a saved state. Same world size: this rank's file, exact.
        Another world size (elastic): the history keys this rank now owns, from every file;
        the RNG of the same rank if it existed, else a fresh one."""
        source = files[min(rank, len(files) - 1)]
        first = load_state(source)
        self.check_strategy(first, source)
        if len(files) == self.store.world_size:
            self.load_state_dict(first, source=source)
            return
        self.store.load_rank_states([load_state(path)["store"] for path in files])
        self.strategy.load_state_dict(first.get("strategy_state", {}))  # the same on every rank
        if rank < len(files):
            self.generator.set_state(first["generator"])


# ----------------------------------------------------------------------------- epoch records

@dataclass
class EpochRecord:
    """Every decision of one epoch, for the audit, the record file and the plots."""
    keep_keys: bool = False
    keys: List[str] = field(default_factory=list)
    parts: dict = field(default_factory=lambda: {n: [] for n in ("curr", "hist", "delta", "kept", "noisy")})

    def add(self, keys, curr, hist, delta, kept_mask, noisy):
        if self.keep_keys:
            self.keys.extend(keys)
        for name, value in (("curr", curr), ("hist", hist), ("delta", delta), ("kept", kept_mask),
                            ("noisy", noisy)):
            self.parts[name].append(value.detach().to("cpu", non_blocking=True))

    def columns(self) -> dict:
        return {n: torch.cat(v) if v else torch.empty(0) for n, v in self.parts.items()}


def nan_stats(x: torch.Tensor):
    x = x[~torch.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std()) if len(x) > 1 else 0.0


# ----------------------------------------------------------------------------- adapter

def _unwrap(model):
    return model.module if hasattr(model, "module") else model


class SelectingLoader:
    """The training loader as OpenCLIP's ``train_one_epoch`` sees it: kept ``(images, texts)``."""

    def __init__(self, loader, selector: Selector, model, args, epoch: int, record: EpochRecord,
                 tb_writer=None, noisy_keys: Optional[audit_lib.NoisyKeyList] = None, oracle=None,
                 loss_weights: Optional[LossWeights] = None):
        self.loader, self.selector, self.model, self.args = loader, selector, model, args
        self.oracle = oracle  # frozen model for clipscore-oracle and learnability
        self.noisy_keys = noisy_keys
        self.loss_weights = loss_weights  # set: the loss is a WeightedClipLoss reading it
        self.epoch, self.record, self.tb_writer = epoch, record, tb_writer
        self.num_batches = loader.num_batches
        # Upstream's progress counter adds len(images) per step: count trained samples
        # (an estimate for the strategies that keep a random number).
        per_step = args.selection_candidates if selector.strategy.variable_kept else \
            selector.num_kept(args.selection_candidates)
        self.num_samples = loader.num_batches * per_step * args.world_size
        self.candidates_seen = 0
        self.trained = 0
        self.time_scoring = 0.0
        self.time_training = 0.0

    def __len__(self):
        return self.num_batches

    def _score(self, images, texts):
        model = _unwrap(self.model)
        strategy = self.selector.strategy
        was_training = model.training
        model.eval()  # no BatchNorm statistics update, no dropout
        try:
            with torch.no_grad(), self.autocast():
                image_features = model.encode_image(images, normalize=True)
                text_features = model.encode_text(texts, normalize=True)
                logit_scale = model.logit_scale.exp() if strategy.needs_loss else None
                if strategy.needs_oracle:
                    oracle_features = (self.oracle.encode_image(images, normalize=True),
                                       self.oracle.encode_text(texts, normalize=True),
                                       self.oracle.logit_scale.exp() if strategy.needs_loss else None)
        finally:
            model.train(was_training)
        scores = strategies.BatchScores.from_features(
            image_features, text_features, logit_scale, self.selector.clipscore_scale,
            gradient=strategy.needs_gradient)
        if strategy.needs_oracle:
            oracle = strategies.BatchScores.from_features(*oracle_features, self.selector.clipscore_scale)
            scores.oracle, scores.oracle_loss = oracle.curr, oracle.loss
        return scores

    def _weights(self, decision, candidates: int):
        """The kept indices and their loss weights; with several ranks, padded to the largest
        kept count of any rank with unkept samples of weight 0 (``ClipLoss`` gathers equal-sized
        batches). Padding samples are negatives to the others but add no loss of their own."""
        kept = decision.kept
        weights = decision.weights
        if weights is None:
            weights = torch.full((len(kept),), candidates / max(len(kept), 1), device=kept.device)
        need = self.selector.store.all_reduce_max(len(kept)) - len(kept)
        if need > 0:
            draws = strategies.uniform(candidates, self.selector.generator, kept.device)
            draws[kept] = -1.0
            padding = torch.argsort(draws, descending=True)[:need]
            kept = torch.cat([kept, padding])
            weights = torch.cat([weights, torch.zeros(need, dtype=weights.dtype, device=weights.device)])
        return kept, weights

    def __iter__(self):
        args = self.args
        device = torch.device(args.device)
        self.autocast = get_autocast(args.precision, device_type=device.type)
        input_dtype = get_input_dtype(args.precision)
        steps_per_epoch = self.num_batches // args.accum_freq
        self.selector.begin_epoch(self.epoch)
        window = []
        for i, (images, texts, keys, noisy) in enumerate(self.loader):
            start = time.perf_counter()
            images = images.to(device=device, dtype=input_dtype, non_blocking=True)
            texts = texts.to(device=device, non_blocking=True)
            scores = self._score(images, texts)
            hashes = hash_keys(keys)
            if self.noisy_keys is not None:
                noisy = self.noisy_keys.label(hashes)
            decision = self.selector.decide(hashes, scores, self.epoch)
            step = steps_per_epoch * self.epoch + i // args.accum_freq
            bad = torch.isnan(decision.rank)
            if bool(bad.any()):
                key = keys[int(bad.nonzero()[0, 0])]
                raise FloatingPointError(
                    f"--selection {args.selection}: NaN selection score at step {step} "
                    f"(epoch {self.epoch}, batch {i}) for sample {key}")
            kept_mask = torch.zeros(len(keys), dtype=torch.bool, device=decision.rank.device)
            kept_mask[decision.kept] = True
            self.record.add(keys, scores.curr, decision.hist, decision.rank, kept_mask,
                            torch.as_tensor(noisy, dtype=torch.int8))
            window.append((scores.curr, decision.hist, decision.rank, len(decision.kept), len(keys)))
            self.candidates_seen += len(keys)
            if self.loss_weights is not None:
                train_rows, weights = self._weights(decision, len(keys))
                self.loss_weights.push(weights, len(keys))
                train_images, train_texts = images[train_rows], texts[train_rows]
            elif self.selector.exchange is None:
                train_images, train_texts = images[decision.kept], texts[decision.kept]
            else:
                train_images, train_texts = self.selector.exchange.rebalance(
                    images, texts, decision.kept, self.selector.num_kept(len(keys)))
            # samples trained on with a weight (padding rows of weight 0 are not counted)
            self.trained += len(decision.kept) if self.loss_weights is not None else len(train_images)
            self.time_scoring += time.perf_counter() - start

            start = time.perf_counter()
            yield train_images, train_texts
            self.time_training += time.perf_counter() - start

            last_micro = (i + 1) % args.accum_freq == 0
            i_accum = i // args.accum_freq
            if last_micro and (i_accum % args.log_every_n_steps == 0 or i_accum + 1 == steps_per_epoch):
                self._log(window, step)
                window = []

    def _log(self, window, step):
        args = self.args
        curr = torch.cat([w[0] for w in window]).float().cpu()
        hist = torch.cat([w[1] for w in window]).float().cpu()
        delta = torch.cat([w[2] for w in window]).float().cpu()
        kept = sum(w[3] for w in window)
        seen = sum(w[4] for w in window)
        stats = {"kept_fraction": kept / max(seen, 1),
                 "time_scoring": self.time_scoring, "time_training": self.time_training,
                 "candidates_seen": self.candidates_seen * args.world_size}
        for name, values in (("curr", curr), ("hist", hist), ("delta", delta)):
            stats[f"{name}_mean"], stats[f"{name}_std"] = nan_stats(values)
        if args.rank == 0:
            log.info(
                f"Selection {args.selection} epoch {self.epoch} step {step}: kept "
                f"{stats['kept_fraction']:.3f} of {stats['candidates_seen']} candidates so far | curr "
                f"{stats['curr_mean']:.2f}±{stats['curr_std']:.2f} hist {stats['hist_mean']:.2f}"
                f"±{stats['hist_std']:.2f} delta {stats['delta_mean']:.3f}±{stats['delta_std']:.3f} | "
                f"time scoring {self.time_scoring:.1f}s training {self.time_training:.1f}s")
            report(args, self.tb_writer, {f"selection/{k}": v for k, v in stats.items()}, step)


def report(args, tb_writer, values: dict, step: int) -> None:
    """Send scalars to TensorBoard and wandb (when the run uses them)."""
    finite = {k: v for k, v in values.items() if not (isinstance(v, float) and math.isnan(v))}
    if tb_writer is not None:
        for name, value in finite.items():
            tb_writer.add_scalar(name, value, step)
    if getattr(args, "wandb", False):
        import wandb

        wandb.log(finite, step=step)


# ----------------------------------------------------------------------------- state files

def state_path(checkpoint_path: str) -> str:
    """Selection state that belongs to an OpenCLIP checkpoint: ``epoch_3.pt`` ->
    ``epoch_3.dissect-state`` in the same folder (found from the checkpoint, whatever --name).
    Each rank writes its own file ``epoch_3.dissect-state.rank<r>-of-<W>``."""
    base = checkpoint_path[:-3] if checkpoint_path.endswith(".pt") else checkpoint_path
    return base + STATE_SUFFIX


def save_state(path: str, state: dict, rank: int = 0, world_size: int = 1) -> str:
    """Write this rank's file atomically: a temp file in the same folder, then rename."""
    target = rank_file(path, rank, world_size)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    with atomic_output(target) as tmp:
        torch.save({"format": STATE_FORMAT, "rank": rank, "world_size": world_size, **state}, tmp)
    return target


def remove_state(path: str) -> None:
    for name in saved_rank_files(path, check=False):
        os.remove(name)


def state_files(path: str) -> list:
    """The rank files of a saved state; a clear error when there are none."""
    files = saved_rank_files(path)
    if not files:
        raise InputError("--resume",
            f"the checkpoint has no selection state (expected {rank_file(path, 0, 1)} or "
            f"its per-rank siblings). Resume with the --selection it was trained with, or pass "
            f"--selection-reset-history to start the history afresh.")
    return files


def load_state(path: str) -> dict:
    """One rank file, read with ``torch.load(weights_only=True)``: tensors and plain values only,
    so a tampered file cannot run code. Anything else is an error naming the file."""
    reset = "resume with --selection-reset-history to start the selection history afresh"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(path, "refused: this selection-state file holds pickled Python objects, "
                               f"which are never loaded (only tensors and plain values are); {reset}") from None
    except Exception as exn:  # noqa: BLE001 - truncated, another format, unreadable
        raise InputError(path, f"cannot read this selection-state file ({type(exn).__name__}: "
                               f"{str(exn).splitlines()[0] if str(exn) else ''}); {reset}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise InputError(path, f"selection-state format {found}, expected {STATE_FORMAT}; {reset}")
    return state
