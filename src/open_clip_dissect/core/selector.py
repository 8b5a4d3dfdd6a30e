"""``Selector``: strategy + history store + RNG, one call per candidate batch from any training loop.

    selector = Selector(create_strategy("dissect-mome"), ratio=0.5, seed=0)
    decision = selector.step(keys, image_features, text_features, logit_scale, epoch)
    # train on images[decision.kept], texts[decision.kept]; decision.weights: loss weights or None

``step`` measures what the strategy reads (CLIPScore, per-sample losses, gradients, the oracle's
scores), reads and writes the history exactly where the strategy says (``Decision.store_mask``),
rejects NaN scores naming the sample, and crosses epoch boundaries itself: a strategy's
``begin_epoch`` / ``end_epoch`` run when ``epoch`` changes (``end_epoch()`` may also be called
explicitly, e.g. before saving state). Over each epoch it sums, on the device, what the strategy's
``end_epoch`` reads (``EpochSignals``: the scoring pass's mean loss and CLIPScore spread); a
held-out retrieval score measured after the epoch is handed in with ``set_retrieval``.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from open_clip_dissect.core import strategies
from open_clip_dissect.core.early_learning import EpochSignals
from open_clip_dissect.core.history import HistoryStore, hash_keys
from open_clip_dissect.errors import InputError

BATCH_MODES = ("shrink", "fixed")


def check_ratio(ratio: float) -> float:
    if not 0.0 < ratio <= 1.0:
        raise InputError("--ratio", f"must be in (0, 1], got {ratio}")
    return ratio


def check_clipscore_scale(scale: float) -> float:
    if scale <= 0:
        raise InputError("--clipscore-scale", f"must be > 0, got {scale}")
    return scale


def as_hashes(keys: Union[Sequence[str], torch.Tensor]) -> torch.Tensor:
    """int64 key hashes: ``keys`` as given when they already are hashes, else ``hash_keys``."""
    if torch.is_tensor(keys):
        if keys.dtype != torch.int64:
            raise TypeError(f"key hashes must be int64, got {keys.dtype}")
        return keys
    return hash_keys(list(keys))


class SingleProcess:
    """The communicator of one process: every reduction is the identity. ``dist.Communicator``
    has the same surface for several processes."""
    rank = 0
    world_size = 1
    device = torch.device("cpu")  # where the collectives run

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``[world, *shape]``: the equal-shaped ``tensor`` of every rank, in rank order."""
        return tensor.unsqueeze(0)

    def all_gather_padded(self, values: torch.Tensor, size: int) -> torch.Tensor:
        """``[world, size]`` on the CPU: every rank's 1-d ``values`` zero-padded to ``size``."""
        padded = torch.zeros(size, dtype=values.dtype, device=self.device)
        padded[:len(values)] = values.to(self.device)
        return self.all_gather(padded).cpu()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def all_reduce_max(self, value: int) -> int:
        return value


@dataclass
class OracleFeatures:
    """A frozen oracle's embeddings of the same candidate batch (``clipscore-oracle``,
    ``learnability``); ``logit_scale`` is needed by the strategies that read losses."""
    image: torch.Tensor
    text: torch.Tensor
    logit_scale: Optional[torch.Tensor] = None


class Selector:
    """Strategy + history + RNG: ranks one candidate batch and updates the history.

    ``batch_mode``: ``shrink`` keeps ``round(ratio x candidates)``; ``fixed`` keeps
    ``train_batch_size`` of each batch. ``store``: the history (a ``HistoryStore``, or the
    ``dist.ShardedHistoryStore`` of several processes); ``comm``: the reductions across processes;
    ``exchange``: global scope, where every rank ranks the gathered global batch (the RNG must then
    be seeded the same on every rank) and keeps ``k x world`` samples.
    """

    def __init__(self, strategy: strategies.Strategy, ratio: float = 0.5, seed: int = 0,
                 batch_mode: str = "shrink", train_batch_size: Optional[int] = None, store=None,
                 comm=None, exchange=None, clipscore_scale: float = 100.0):
        self.strategy, self.ratio, self.batch_mode = strategy, check_ratio(ratio), batch_mode
        if batch_mode not in BATCH_MODES:
            raise InputError("--selection-batch-mode", f"must be one of {BATCH_MODES}, got {batch_mode!r}")
        if batch_mode == "fixed" and not train_batch_size:
            raise ValueError("batch_mode 'fixed' needs train_batch_size")
        if exchange is not None and strategy.variable_kept:
            raise InputError("--selection-scope", f"--selection {strategy.name} keeps a random number of "
                                                  f"samples per rank; it needs --selection-scope local")
        self.train_batch_size = train_batch_size
        self.store = store if store is not None else HistoryStore()
        self.comm = comm if comm is not None else SingleProcess()
        self.exchange = exchange
        self.generator = torch.Generator().manual_seed(seed)
        self.clipscore_scale = check_clipscore_scale(clipscore_scale)
        self.epoch = None        # the epoch in progress; None between epochs
        # This rank's sums over the epoch: candidates, CLIPScore, CLIPScore^2, loss, losses counted.
        self._totals = None
        self._retrieval = None   # R@sum measured after the epoch (one rank is enough)
        self.last_signals = None  # the EpochSignals of the last epoch that ended

    def num_kept(self, candidates: int) -> int:
        if self.strategy.keeps_all:
            return candidates
        if self.batch_mode == "fixed":
            return min(candidates, self.train_batch_size)
        return strategies.num_kept(candidates, self.ratio)

    # -- epochs -----------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        """Epoch-level inputs of the strategy (InfoBatch: the mean stored score, all ranks)."""
        if self.epoch is not None:
            self.end_epoch()
        mean = self.store.mean_score() if self.strategy.needs_history_mean else None
        self.strategy.begin_epoch(epoch, mean)
        self.epoch, self._totals, self._retrieval = epoch, None, None

    def set_retrieval(self, rsum: float) -> None:
        """The held-out retrieval R@sum measured after the epoch in progress (on any one rank),
        for the strategies that watch it (``--dissect-auto-signal retrieval``)."""
        self._retrieval = float(rsum)

    def end_epoch(self) -> Optional[str]:
        """Close the epoch in progress (no-op between epochs): hand the strategy the epoch's
        ``EpochSignals`` summed over every rank (one all-reduce, on every rank). Returns the
        strategy's line for the log, if any."""
        if self.epoch is None:
            return None
        local = torch.zeros(7, dtype=torch.float64)
        if self._totals is not None:
            local[:5] = self._totals.cpu()
        if self._retrieval is not None:
            local[5:] = torch.tensor([self._retrieval, 1.0], dtype=torch.float64)
        n, total, squares, loss, n_loss, retrieval, n_retrieval = self.comm.all_reduce_sum(local).tolist()
        mean = total / n if n else None
        self.last_signals = EpochSignals(
            candidates=int(n), clipscore_mean=mean,
            clipscore_std=max(squares / n - mean * mean, 0.0) ** 0.5 if n else None,
            mean_loss=loss / n_loss if n_loss else None,
            retrieval=retrieval / n_retrieval if n_retrieval else None)
        message = self.strategy.end_epoch(self.epoch, self.last_signals)
        self.epoch, self._totals, self._retrieval = None, None, None
        return message

    # -- one candidate batch --------------------------------------------------------------------
    def step(self, keys, image_features: torch.Tensor, text_features: torch.Tensor,
             logit_scale: Optional[torch.Tensor] = None, epoch: int = 0,
             oracle: Optional[OracleFeatures] = None) -> strategies.Decision:
        """Decide which of the candidates to train on. ``keys``: one per sample, strings or their
        int64 hashes (``hash_keys``); features: the scoring pass's embeddings (any scale);
        ``logit_scale``: the model's (exponentiated) one, read by loss-based strategies."""
        return self.decide(as_hashes(keys), self.scores(image_features, text_features, logit_scale, oracle),
                           epoch, keys=None if torch.is_tensor(keys) else keys)

    def scores(self, image_features, text_features, logit_scale=None, oracle=None) -> strategies.BatchScores:
        """The measurements the strategy reads, from the scoring pass's features."""
        strategy = self.strategy
        if strategy.needs_loss and logit_scale is None:
            raise ValueError(f"strategy {strategy.name!r} reads per-sample losses: pass logit_scale")
        if strategy.needs_oracle and oracle is None:
            raise ValueError(f"strategy {strategy.name!r} needs the oracle's features (oracle=OracleFeatures)")
        scores = strategies.BatchScores.from_features(
            image_features, text_features, logit_scale if strategy.needs_loss else None,
            self.clipscore_scale, gradient=strategy.needs_gradient)
        if strategy.needs_oracle:
            measured = strategies.BatchScores.from_features(
                oracle.image, oracle.text, oracle.logit_scale if strategy.needs_loss else None,
                self.clipscore_scale)
            scores.oracle, scores.oracle_loss = measured.curr, measured.loss
        return scores

    def decide(self, hashes: torch.Tensor, scores: strategies.BatchScores, epoch: int,
               keys: Optional[Sequence[str]] = None) -> strategies.Decision:
        """``step`` from measured scores; ``keys`` (optional) name a sample with a NaN score."""
        if self.epoch != epoch:
            self.begin_epoch(epoch)
        history = None
        if self.strategy.needs_history:
            seen, score = self.store.get(hashes)
            history = strategies.History(score.to(scores.curr.device), seen.to(scores.curr.device))
        if self.exchange is None:
            decision = self.strategy.decide(scores, history, self.num_kept(len(hashes)), epoch, self.generator)
        else:
            decision = self._decide_global(len(hashes), scores, history, epoch)
        # A NaN embedding (a diverged model) is an error whatever the strategy ranks by; name that
        # sample first (a batch-wise loss spreads its NaN to every row).
        bad = torch.stack([torch.isnan(scores.curr), torch.isnan(decision.rank)])
        if bool(bad.any()):  # one host sync per batch, none per sample
            i = int(bad[0].nonzero()[0, 0]) if bool(bad[0].any()) else int(bad[1].nonzero()[0, 0])
            raise FloatingPointError(f"--selection {self.strategy.name}: NaN selection score in epoch "
                                     f"{epoch} for sample {keys[i] if keys is not None else f'#{i}'}")
        if self.strategy.needs_history and decision.new_history is not None:  # None: store nothing
            self.store.update(hashes, decision.new_history, epoch, decision.store_mask)
        self._add_to_totals(scores)
        return decision

    def _add_to_totals(self, scores: strategies.BatchScores) -> None:
        """The epoch's sums, on the device (no host sync per batch)."""
        curr = scores.curr.double()
        loss = scores.loss.double() if scores.loss is not None else curr.new_zeros(0)
        def count(n):  # a fill on the device, not a host-to-device copy
            return torch.full((), float(n), dtype=curr.dtype, device=curr.device)

        batch = torch.stack([count(len(curr)), curr.sum(), (curr * curr).sum(), loss.sum(), count(len(loss))])
        self._totals = batch if self._totals is None else self._totals + batch

    def _decide_global(self, n, scores, history, epoch):
        """Rank the gathered global batch; return this rank's rows (``kept``: its candidates
        that were kept globally, any number; the loader rebalances)."""
        ex = self.exchange
        g_scores = strategies.BatchScores(**{f: ex.gather(v) for f, v in scores.fields().items()})
        g_history = None if history is None else strategies.History(
            ex.gather(history.score), ex.gather(history.seen))
        g = self.strategy.decide(g_scores, g_history, self.num_kept(n) * ex.comm.world_size, epoch, self.generator)
        bad = torch.isnan(g.rank).nonzero()
        if len(bad) and int(bad[0, 0]) // n != ex.comm.rank:  # the owning rank names the sample
            raise FloatingPointError(f"NaN selection score on rank {int(bad[0, 0]) // n}")
        rows = slice(ex.comm.rank * n, (ex.comm.rank + 1) * n)
        kept = torch.zeros(len(g.rank), dtype=torch.bool, device=g.rank.device)
        kept[g.kept] = True
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return strategies.Decision(kept[rows].nonzero().squeeze(1), g.rank[rows], g.hist[rows],
                                   pick(g.new_history), pick(g.store_mask))

    # -- state ------------------------------------------------------------------------------------
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
