"""``SelectingLoader``: the training loader as OpenCLIP's ``train_one_epoch`` sees it.

For each candidate batch it runs the ``Scorer`` (a no-grad pass of the model being trained;
skipped for a strategy that reads no scores, unless the run records them), asks the
``Selector``, and hands upstream's loop only the kept ``(images, texts)``. Gradient accumulation,
distillation, gradient checkpointing, the LR schedule and logging stay upstream's.
It reads a ``LoaderConfig``, not OpenCLIP's ``args``.
"""

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from open_clip_dissect.core import audit as audit_lib
from open_clip_dissect.core import strategies
from open_clip_dissect.core.epoch_decisions import EpochDecisions, nan_stats
from open_clip_dissect.core.scorer import Scorer
from open_clip_dissect.core.selector import Selector
from open_clip_dissect.core.transfer import to_device
from open_clip_dissect.openclip.launch.crash_points import kill_if_asked
from open_clip_dissect.openclip.training.timing import PhaseTimer
from open_clip_dissect.openclip.training.weighted_loss import LossWeights

log = logging.getLogger(__name__)


@dataclass
class LoaderConfig:
    """What the selecting loader needs of the run (``from_args`` reads OpenCLIP's flags)."""

    selection: str  # --selection, for messages
    candidates: int  # candidates per batch (--batch-size, or ceil(B / r) in fixed mode)
    device: str = "cpu"
    input_dtype: Optional[torch.dtype] = None
    autocast: Callable = nullcontext  # the training precision's autocast
    accum_freq: int = 1
    log_every_n_steps: int = 100
    rank: int = 0
    world_size: int = 1
    wandb: bool = False
    scoring_mode: str = "eval"  # --selection-scoring-mode
    record_scores: bool = False  # --selection-record: score every batch, whatever the strategy reads

    @classmethod
    def from_args(cls, args) -> "LoaderConfig":
        from open_clip import get_input_dtype
        from open_clip_train.precision import get_autocast

        device = torch.device(args.device)
        return cls(
            selection=args.selection,
            candidates=args.selection_candidates,
            device=args.device,
            input_dtype=get_input_dtype(args.precision),
            autocast=get_autocast(args.precision, device_type=device.type),
            accum_freq=args.accum_freq,
            log_every_n_steps=args.log_every_n_steps,
            rank=args.rank,
            world_size=args.world_size,
            wandb=bool(getattr(args, "wandb", False)),
            scoring_mode=args.selection_scoring_mode,
            record_scores=bool(args.selection_record),
        )


class SelectingLoader:
    """The training loader as OpenCLIP's ``train_one_epoch`` sees it: kept ``(images, texts)``.
    ``loader`` yields ``(images, texts, keys, hashes, noisy)`` (``openclip.pipeline.keyed_data``)."""

    def __init__(
        self,
        loader,
        selector: Selector,
        model,
        config: LoaderConfig,
        epoch: int,
        record: EpochDecisions,
        tb_writer=None,
        noisy_keys: Optional[audit_lib.NoisyKeyList] = None,
        oracle=None,
        loss_weights: Optional[LossWeights] = None,
    ):
        self.loader, self.selector, self.config = loader, selector, config
        self.scorer = Scorer(
            model,
            oracle if selector.strategy.needs_oracle else None,
            config.autocast,
            logit_scale=selector.strategy.needs_loss,
            mode=config.scoring_mode,
        )
        # random reads no score: its steps cost no scoring pass unless the records want CLIPScores
        self.scoring = selector.strategy.needs_scores or config.record_scores
        self.noisy_keys = noisy_keys
        self.loss_weights = loss_weights  # set: the loss is a WeightedClipLoss reading it
        self.epoch, self.record, self.tb_writer = epoch, record, tb_writer
        self.num_batches = loader.num_batches
        # Upstream's progress counter adds len(images) per step: count trained samples
        # (an estimate for the strategies that keep a random number).
        per_step = config.candidates if selector.strategy.variable_kept else selector.num_kept(config.candidates)
        self.num_samples = loader.num_batches * per_step * config.world_size
        self.candidates_seen = 0
        self.trained = 0
        self.timer = PhaseTimer(config.device)  # CUDA events on a GPU: launch time is not work time

    @property
    def time_scoring(self) -> float:
        """Seconds scoring and selecting so far (on a GPU: waits for the work launched)."""
        return self.timer.seconds("scoring")

    @property
    def time_training(self) -> float:
        """Seconds in upstream's training steps so far (on a GPU: waits for the work launched)."""
        return self.timer.seconds("training")

    def __len__(self):
        return self.num_batches

    def _weights(self, decision, candidates: int):
        """The kept indices and their loss weights; with several ranks, padded to the largest
        kept count of any rank with unkept samples of weight 0 (``ClipLoss`` gathers equal-sized
        batches). Padding samples are negatives to the others but add no loss of their own."""
        kept = decision.kept
        weights = decision.weights
        if weights is None:
            weights = torch.full((len(kept),), candidates / max(len(kept), 1), device=kept.device)
        need = max(self.selector.kept_counts) - len(kept)  # agreed in the step: no collective here
        if need > 0:
            draws = strategies.uniform(candidates, self.selector.generator, kept.device)
            draws[kept] = -1.0
            padding = torch.argsort(draws, descending=True)[:need]
            kept = torch.cat([kept, padding])
            weights = torch.cat([weights, torch.zeros(need, dtype=weights.dtype, device=weights.device)])
        return kept, weights

    def __iter__(self):
        cfg = self.config
        steps_per_epoch = self.num_batches // cfg.accum_freq
        window = []
        i = -1
        for batch in self.loader:  # not enumerate(): its cached result tuple would keep the batch alive
            i += 1
            kill_if_asked("train", self.epoch, i, cfg.rank)  # crash tests only
            self.timer.start("scoring")
            step = steps_per_epoch * self.epoch + i // cfg.accum_freq
            train_images, train_texts = self._select(i, step, *batch, window)
            # Nothing of the candidate batch (images, features, scores) stays referenced here
            # during upstream's step: _select's locals are gone, and so is the loader's batch.
            del batch
            self.timer.start("training")
            yield train_images, train_texts
            del train_images, train_texts
            self.timer.stop()

            last_micro = (i + 1) % cfg.accum_freq == 0
            i_accum = i // cfg.accum_freq
            if last_micro and (i_accum % cfg.log_every_n_steps == 0 or i_accum + 1 == steps_per_epoch):
                self._log(window, step)
                window = []

    def _select(self, i, step, images, texts, keys, hashes, noisy, window):
        """Score one candidate batch, decide, record; return the kept ``(images, texts)``."""
        cfg = self.config
        # Pinned (by the data loader, else here) and asynchronous on a GPU (core.transfer).
        images = to_device(images, cfg.device).to(dtype=cfg.input_dtype)
        texts = to_device(texts, cfg.device)
        if self.scoring:
            features = self.scorer(images, texts)
            scores = self.selector.scores(features.image, features.text, features.logit_scale, features.oracle)
        else:
            scores = strategies.BatchScores.unmeasured(len(keys), images.device)
        if self.noisy_keys is not None:
            noisy = self.noisy_keys.label(hashes)
        try:
            decision = self.selector.decide(hashes, scores, self.epoch, keys)
        except FloatingPointError as exn:
            raise FloatingPointError(f"{exn} (step {step}, batch {i})") from None
        kept_mask = torch.zeros(len(keys), dtype=torch.bool, device=decision.rank.device)
        kept_mask[decision.kept] = True
        self.record.add(
            keys, scores.curr, decision.hist, decision.rank, kept_mask, torch.as_tensor(noisy, dtype=torch.int8)
        )
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
                images, texts, decision.kept, self.selector.num_kept(len(keys))
            )
        # samples trained on with a weight (padding rows of weight 0 are not counted)
        self.trained += len(decision.kept) if self.loss_weights is not None else len(train_images)
        return train_images, train_texts

    def _log(self, window, step):
        cfg = self.config
        curr = torch.cat([w[0] for w in window]).float().cpu()
        hist = torch.cat([w[1] for w in window]).float().cpu()
        delta = torch.cat([w[2] for w in window]).float().cpu()
        kept = sum(w[3] for w in window)
        seen = sum(w[4] for w in window)
        stats = {
            "kept_fraction": kept / max(seen, 1),
            "time_scoring": self.time_scoring,
            "time_training": self.time_training,
            "candidates_seen": self.candidates_seen,
        }  # this rank's (ranks may see different counts)
        for name, values in (("curr", curr), ("hist", hist), ("delta", delta)):
            stats[f"{name}_mean"], stats[f"{name}_std"] = nan_stats(values)
        if cfg.rank == 0:
            scores = (
                f"curr {stats['curr_mean']:.2f}±{stats['curr_std']:.2f} hist {stats['hist_mean']:.2f}"
                f"±{stats['hist_std']:.2f} delta {stats['delta_mean']:.3f}±{stats['delta_std']:.3f}"
                if self.scoring
                else "no scoring pass"
            )
            log.info(
                f"Selection {cfg.selection} epoch {self.epoch} step {step}: kept "
                f"{stats['kept_fraction']:.3f} of {stats['candidates_seen']} candidates so far"
                f"{' on rank 0' if cfg.world_size > 1 else ''} | {scores} | "
                f"time scoring {self.time_scoring:.1f}s training {self.time_training:.1f}s"
            )
            report(cfg.wandb, self.tb_writer, {f"selection/{k}": v for k, v in stats.items()}, step)


def report(wandb: bool, tb_writer, values: dict, step: int) -> None:
    """Send scalars to TensorBoard and wandb (when the run uses them)."""
    finite = {k: v for k, v in values.items() if not (isinstance(v, float) and math.isnan(v))}
    if tb_writer is not None:
        for name, value in finite.items():
            tb_writer.add_scalar(name, value, step)
    if wandb:
        import wandb as wandb_lib

        wandb_lib.log(finite, step=step)
