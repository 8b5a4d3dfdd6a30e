"""``Selector``: strategy + history store + RNG, one call per candidate batch from any training loop.

    selector = Selector(create_strategy("dissect-mome"), ratio=0.5, seed=0)
    decision = selector.step(keys, image_features, text_features, logit_scale, epoch)
    # train on images[decision.kept], texts[decision.kept]; decision.weights: loss weights or None

``step`` measures what the strategy reads (CLIPScore, per-sample losses, gradients, the oracle's
scores), reads and writes the history exactly where the strategy says (``Decision.store_mask``),
rejects NaN scores naming the sample (on every rank at once), reads the GPU once per step (see
docs/distributed.md, "Performance"), and crosses epoch boundaries itself: a strategy's
``begin_epoch`` / ``end_epoch`` run when ``epoch`` changes (``end_epoch()`` may also be called
explicitly, e.g. before saving state). Over each epoch it sums, on the device, what the strategy's
``end_epoch`` reads (``EpochSignals``: the scoring pass's mean loss and CLIPScore spread); a
held-out retrieval score measured after the epoch is handed in with ``set_retrieval``.
"""

import numbers
from functools import partial
from typing import Optional, Sequence, Union

import torch

from open_clip_dissect.core import strategies
from open_clip_dissect.core.early_learning import EpochSignals
from open_clip_dissect.core.history import HistoryStore, hash_keys
from open_clip_dissect.core.transfer import to_device
from open_clip_dissect.core.types import OracleFeatures, SingleProcess
from open_clip_dissect.errors import InputError

BATCH_MODES = ("shrink", "fixed")


def _check_number(value, name: str) -> None:
    """A Python API argument that must be a real number (a ``str`` from a config file is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")


def check_ratio(ratio: float) -> float:
    _check_number(ratio, "ratio")
    if not 0.0 < ratio <= 1.0:
        raise InputError("--ratio", f"must be in (0, 1], got {ratio}")
    return ratio


def check_clipscore_scale(scale: float) -> float:
    _check_number(scale, "clipscore_scale")
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


def first_nan(curr: torch.Tensor, rank: torch.Tensor, measured: bool = True) -> torch.Tensor:
    """``[1]`` float64 on the device, no host sync: 1 + the index of the first sample whose
    CLIPScore is NaN, else of the first whose ranking score is NaN; 0 when there is none. (A
    batch-wise loss spreads one NaN to every row: the CLIPScore names the sample behind it.)
    ``measured`` False: no scoring pass ran (NaN CLIPScores by design), only ``rank`` counts."""
    if not measured:
        curr = rank
    n = len(curr)
    none = torch.full((1,), n + 1, dtype=torch.float64, device=curr.device)
    code = torch.arange(1, n + 1, dtype=torch.float64, device=curr.device)
    in_curr = torch.cat([torch.where(torch.isnan(curr), code, none), none]).amin()
    in_rank = torch.cat([torch.where(torch.isnan(rank), code, none), none]).amin()
    first = torch.where(in_curr <= n, in_curr, in_rank)
    return torch.where(first <= n, first, torch.zeros_like(first)).reshape(1)


DECISION_COLUMNS = 4  # global scope: rank, hist, new history, flags (1: kept, 2: store) per sample


class Selector:
    """Strategy + history + RNG: ranks one candidate batch and updates the history.

    ``batch_mode``: ``shrink`` keeps ``round(ratio x candidates)``; ``fixed`` keeps
    ``train_batch_size`` of each batch. ``store``: the history (a ``HistoryStore``, or the
    ``distributed.ShardedHistoryStore`` of several processes); ``comm``: the reductions across processes;
    ``exchange``: global scope, where rank 0 ranks the gathered global batch, keeps ``k x world``
    samples and sends every rank its part of that one decision.
    """

    def __init__(
        self,
        strategy: strategies.Strategy,
        ratio: float = 0.5,
        seed: int = 0,
        batch_mode: str = "shrink",
        train_batch_size: Optional[int] = None,
        store=None,
        comm=None,
        exchange=None,
        clipscore_scale: float = 100.0,
    ):
        self.strategy, self.ratio, self.batch_mode = strategy, check_ratio(ratio), batch_mode
        if batch_mode not in BATCH_MODES:
            raise InputError("--selection-batch-mode", f"must be one of {BATCH_MODES}, got {batch_mode!r}")
        if batch_mode == "fixed" and not train_batch_size:
            raise ValueError("batch_mode 'fixed' needs train_batch_size")
        if exchange is not None and strategy.variable_kept:
            raise InputError(
                "--selection-scope",
                f"--selection {strategy.name} keeps a random number of "
                f"samples per rank; it needs --selection-scope local",
            )
        self.train_batch_size = train_batch_size
        self.store = store if store is not None else HistoryStore()
        self.comm = comm if comm is not None else SingleProcess()
        self.exchange = exchange
        self.generator = torch.Generator().manual_seed(seed)
        self.clipscore_scale = check_clipscore_scale(clipscore_scale)
        self.epoch = None  # the epoch in progress; None between epochs
        self.latest_epoch = None  # the highest epoch a step has seen: epochs never go back
        # This rank's sums over the epoch: candidates, CLIPScores measured, CLIPScore, CLIPScore^2,
        # loss, losses counted.
        self._totals = None
        self._retrieval = None  # R@sum measured after the epoch (one rank is enough)
        self.last_signals = None  # the EpochSignals of the last epoch that ended
        self.kept_counts = None  # every rank's kept count in the last step (agreed in the step)

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
        """Close the epoch in progress: hand the strategy the epoch's ``EpochSignals`` summed
        over every rank. One all-reduce, on every rank, also on one that took no step in the
        epoch (it adds zeros and learns the epoch from the others); nothing reaches the strategy
        when no rank has an epoch in progress. Returns the strategy's line for the log, if any."""
        local = torch.zeros(11, dtype=torch.float64)
        if self._totals is not None:
            local[:6] = self._totals.cpu()
        if self._retrieval is not None:
            local[6:8] = torch.tensor([self._retrieval, 1.0], dtype=torch.float64)
        if self.epoch is not None:
            local[8:] = torch.tensor([1.0, self.epoch, self.epoch**2], dtype=torch.float64)
        (n, n_scored, total, squares, loss, n_loss, retrieval, n_retrieval, ranks, epochs, epoch_squares) = (
            self.comm.all_reduce_sum(local).tolist()
        )
        self.epoch, self._totals, self._retrieval = None, None, None
        if not ranks:
            return None
        if abs(epoch_squares * ranks - epochs * epochs) > 0.5:  # equal iff every rank's epoch is the same
            raise RuntimeError(f"the ranks end different epochs (mean {epochs / ranks:.2f})")
        epoch = round(epochs / ranks)
        mean = total / n_scored if n_scored else None
        self.last_signals = EpochSignals(
            candidates=int(n),
            clipscore_mean=mean,
            clipscore_std=max(squares / n_scored - mean * mean, 0.0) ** 0.5 if n_scored else None,
            mean_loss=loss / n_loss if n_loss else None,
            retrieval=retrieval / n_retrieval if n_retrieval else None,
        )
        return self.strategy.end_epoch(epoch, self.last_signals)

    # -- one candidate batch --------------------------------------------------------------------
    def step(
        self,
        keys,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: Optional[torch.Tensor] = None,
        epoch: int = 0,
        oracle: Optional[OracleFeatures] = None,
    ) -> strategies.Decision:
        """Decide which of the candidates to train on. ``keys``: one per sample, strings or their
        int64 hashes (``hash_keys``); features: the scoring pass's embeddings (any scale);
        ``logit_scale``: the model's (exponentiated) one, read by loss-based strategies."""
        for name, features in (("image_features", image_features), ("text_features", text_features)):
            if not torch.is_tensor(features):
                raise TypeError(
                    f"{name} must be a torch.Tensor, got {type(features).__module__}.{type(features).__name__} "
                    "(torch.from_numpy converts a numpy array)"
                )
            if features.dim() != 2:
                raise ValueError(f"{name} must be [batch, dim], got shape {tuple(features.shape)}")
        if image_features.shape != text_features.shape:
            raise ValueError(
                f"image_features {tuple(image_features.shape)} and text_features {tuple(text_features.shape)} "
                "must have the same shape"
            )
        return self.decide(
            as_hashes(keys),
            self.scores(image_features, text_features, logit_scale, oracle),
            epoch,
            keys=None if torch.is_tensor(keys) else keys,
        )

    def scores(self, image_features, text_features, logit_scale=None, oracle=None) -> strategies.BatchScores:
        """The measurements the strategy reads, from the scoring pass's features."""
        strategy = self.strategy
        if strategy.needs_loss and logit_scale is None:
            raise ValueError(f"strategy {strategy.name!r} reads per-sample losses: pass logit_scale")
        if strategy.needs_oracle and oracle is None:
            raise ValueError(f"strategy {strategy.name!r} needs the oracle's features (oracle=OracleFeatures)")
        scores = strategies.BatchScores.from_features(
            image_features,
            text_features,
            logit_scale if strategy.needs_loss else None,
            self.clipscore_scale,
            gradient=strategy.needs_gradient,
        )
        if strategy.needs_oracle:
            measured = strategies.BatchScores.from_features(
                oracle.image, oracle.text, oracle.logit_scale if strategy.needs_loss else None, self.clipscore_scale
            )
            scores.oracle, scores.oracle_loss = measured.curr, measured.loss
        return scores

    def decide(
        self, hashes: torch.Tensor, scores: strategies.BatchScores, epoch: int, keys: Optional[Sequence[str]] = None
    ) -> strategies.Decision:
        """``step`` from the scores of the batch (``BatchScores.unmeasured`` for a strategy that
        reads none); ``keys`` (optional) name a sample with a NaN score.

        One host sync: a single device-to-host read of the decision's few numbers (the first
        NaN, the scores to store); strategies that keep a random number add the one that counts
        them. With several processes the ranks agree in the same step, within a collective the
        step runs anyway, whether any rank saw a NaN, and all raise the same error.
        """
        if not scores.measured and self.strategy.needs_scores:
            raise ValueError(f"strategy {self.strategy.name!r} reads scores: these were not measured")
        if len(hashes) != len(scores.curr):
            raise ValueError(
                f"keys: {len(hashes)} of them for a batch of {len(scores.curr)} samples; give one a sample"
            )
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
            raise TypeError(f"epoch must be an int, got {type(epoch).__name__} {epoch!r}")
        if self.latest_epoch is not None and epoch < self.latest_epoch:
            raise ValueError(f"epoch {epoch} comes after epoch {self.latest_epoch}: epochs must not go back")
        self.latest_epoch = epoch
        if self.epoch != epoch:
            self.begin_epoch(epoch)
        device = scores.curr.device
        history = None
        if self.strategy.needs_history:
            seen, score = self.store.get(hashes)
            history = strategies.History(to_device(score, device), to_device(seen, device))
        if self.exchange is None:
            decision = self._decide_local(hashes, scores, history, epoch, keys)
        else:
            decision = self._decide_global(hashes, scores, history, epoch, keys)
        self._add_to_totals(scores)
        return decision

    def _decide_local(self, hashes, scores, history, epoch, keys):
        n = len(hashes)
        decision = self.strategy.decide(scores, history, self.num_kept(n), epoch, self.generator)
        stores = self.strategy.needs_history and decision.new_history is not None  # None: store nothing
        parts = [first_nan(scores.curr, decision.rank, scores.measured)]
        if stores:
            mask = decision.store_mask if decision.store_mask is not None else torch.ones_like(decision.rank)
            parts += [decision.new_history.double(), mask.double()]
        read = torch.cat(parts).cpu()  # the step's one device-to-host read
        # What every rank tells the others: its first NaN (0: none) and how many it keeps.
        header = torch.tensor([float(read[0]), float(len(decision.kept))], dtype=torch.float64)
        check = partial(self._check_step, epoch=epoch, keys=keys)
        score, mask = (read[1 : n + 1].float(), read[n + 1 :] > 0.5) if stores else (None, None)
        if self.strategy.needs_history and getattr(self.store, "world_size", 1) == self.comm.world_size:
            # The header rides with the history update (also when this rank stores nothing: the
            # collectives follow the strategy, not this batch), checked before anything is written.
            self.store.update(hashes, score, epoch, mask, header=header, check=check)
            return decision
        check(self.comm.all_gather_host(header) if self.comm.world_size > 1 else header[None])
        if stores:
            self.store.update(hashes, score, epoch, mask)
        return decision

    def _check_step(self, headers: torch.Tensor, epoch: int, keys) -> None:
        """``headers``: ``[world, 2]`` (first NaN + 1 or 0, kept count) of every rank, on the CPU."""
        self.kept_counts = headers[:, 1].long().tolist()
        bad = (headers[:, 0] > 0).nonzero()
        if len(bad):
            rank = int(bad[0, 0])
            self._raise_nan(rank, int(headers[rank, 0]) - 1, epoch, keys)

    def _raise_nan(self, rank: int, index: int, epoch: int, keys) -> None:
        """The same error on every rank, naming the rank and the sample (its key where known)."""
        name = keys[index] if keys is not None and rank == self.comm.rank else None
        where = ""
        if self.comm.world_size > 1:
            name = self.comm.broadcast_text(name, src=rank)  # only on this error path
            where = f" of rank {rank}"
        raise FloatingPointError(
            f"--selection {self.strategy.name}: NaN selection score in epoch {epoch} "
            f"for sample {name or f'#{index}'}{where}"
        )

    def _add_to_totals(self, scores: strategies.BatchScores) -> None:
        """The epoch's sums, on the device (no host sync per batch)."""
        curr = scores.curr.double()
        n = len(curr)
        if not scores.measured:  # no scoring pass: candidates counted, no CLIPScore
            curr = curr.new_zeros(0)
        loss = scores.loss.double() if scores.loss is not None else curr.new_zeros(0)

        def count(how_many):  # a fill on the device, not a host-to-device copy
            return torch.full((), float(how_many), dtype=curr.dtype, device=curr.device)

        batch = torch.stack([count(n), count(len(curr)), curr.sum(), (curr * curr).sum(), loss.sum(), count(len(loss))])
        self._totals = batch if self._totals is None else self._totals + batch

    def _decide_global(self, hashes, scores, history, epoch, keys):
        """Rank 0 ranks the gathered global batch and hands each rank its rows of that one
        decision (``kept``: its candidates kept globally, any number; ``exchange.rebalance``
        evens them out). One decision: no sample is trained twice or never, whatever the GPUs'
        rounding or ties. Collectives: a gather of the scores (and history) to rank 0, a
        scatter of the decision rows, each with a few header numbers (first NaN, kept counts)."""
        comm = self.exchange.comm
        n, world = len(hashes), comm.world_size
        device = scores.curr.device
        fields = scores.fields()
        columns = [v.reshape(n, -1).float() for v in fields.values()]
        if history is not None:
            columns += [history.score.reshape(n, 1).float(), history.seen.reshape(n, 1).float()]
        gathered = comm.gather(torch.cat(columns, 1))  # [world, n, columns] on rank 0, else None
        header_rows = -(-(2 + world) // DECISION_COLUMNS)
        parts = None
        if gathered is not None:
            parts = self._decide_for_all(gathered, fields, history is not None, epoch, header_rows, scores.measured)
        mine = comm.scatter(parts, (n + header_rows, DECISION_COLUMNS), torch.float64, device)
        read = mine.cpu()  # the step's one device-to-host read
        header = read[n:].flatten()
        code, has_new = int(header[0]), bool(header[1] > 0.5)
        counts = header[2 : 2 + world].long().tolist()
        self.kept_counts = counts
        if code:
            self._raise_nan((code - 1) // n, (code - 1) % n, epoch, keys)
        flags = read[:n, 3].long()
        kept = (flags & 1).nonzero().squeeze(1)  # on the CPU: no sync
        store_mask = (flags & 2) > 0
        if self.strategy.needs_history and has_new:
            self.store.update(hashes, read[:n, 2].float(), epoch, store_mask)
        self.exchange.counts = counts  # the rebalance's split sizes, known on every rank
        rows = mine[:n].float()
        return strategies.Decision(
            to_device(kept, device),
            rows[:, 0],
            rows[:, 1],
            rows[:, 2] if has_new else None,
            to_device(store_mask, device) if has_new else None,
        )

    def _decide_for_all(self, gathered, fields, with_history, epoch, header_rows, measured=True):
        """Rank 0: the decision on the global batch, as ``[world, n + header_rows, 4]`` float64
        (per sample rank, hist, new history, flags; then the header: first NaN + 1 (global
        index, 0: none), whether the history is written, each rank's kept count)."""
        world, n = gathered.shape[:2]
        flat = gathered.flatten(0, 1)
        values, at = {}, 0
        for name, local in fields.items():
            width = local.reshape(n, -1).shape[1]
            values[name] = flat[:, at : at + width].reshape(world * n, *local.shape[1:]).to(local.dtype)
            at += width
        history = strategies.History(flat[:, at], flat[:, at + 1] > 0.5) if with_history else None
        g = self.strategy.decide(
            strategies.BatchScores(**values, measured=measured),
            history,
            self.num_kept(n) * world,
            epoch,
            self.generator,
        )
        kept = torch.zeros(world * n, dtype=torch.float64, device=flat.device)
        kept[g.kept] = 1.0
        if g.new_history is None:
            new, stored = torch.zeros_like(kept), torch.zeros_like(kept)
        else:
            new = g.new_history.double()
            stored = torch.ones_like(kept) if g.store_mask is None else g.store_mask.double()
        rows = torch.stack([g.rank.double(), g.hist.double(), new, kept + 2 * stored], 1).reshape(world, n, 4)
        header = torch.zeros(header_rows * DECISION_COLUMNS, dtype=torch.float64, device=flat.device)
        header[0:1] = first_nan(values["curr"], g.rank, measured)  # every rank measures alike
        header[1] = float(g.new_history is not None)
        header[2 : 2 + world] = kept.reshape(world, n).sum(1)
        return torch.cat([rows, header.reshape(1, header_rows, DECISION_COLUMNS).expand(world, -1, -1)], 1)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "strategy": self.strategy.name,
            "ratio": self.ratio,
            "batch_mode": self.batch_mode,
            "store": self.store.state_dict(),
            "generator": self.generator.get_state(),
            "strategy_state": self.strategy.state_dict(),
        }

    def check_strategy(self, state: dict, source: str) -> None:
        if state.get("strategy") != self.strategy.name:
            raise InputError(
                "--resume",
                f"{source} holds selection state of strategy "
                f"{state.get('strategy')!r}, but --selection is {self.strategy.name!r}",
            )

    def load_state_dict(self, state: dict, source: str = "state") -> None:
        self.check_strategy(state, source)
        self.store.load_state_dict(state["store"])
        self.generator.set_state(state["generator"])
        self.strategy.load_state_dict(state.get("strategy_state", {}))
