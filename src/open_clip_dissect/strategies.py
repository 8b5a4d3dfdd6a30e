"""Selection strategies: pure tensor code, no OpenCLIP, no argparse, no files.

A strategy turns per-sample measurements of one candidate batch (``BatchScores``) and, where it
needs one, the per-sample history into a ranking score; ``select_topk`` keeps the ``k`` highest.
Three lines plug it into any training loop::

    scores = BatchScores.from_features(image_features, text_features, logit_scale)
    decision = strategy.decide(scores, history, k, epoch, generator)
    train_on(batch[decision.kept])  # then store history.update(keys, decision.new_history)

Conventions: ``curr`` is the CLIPScore ``w * max(cos, 0)`` of the model being trained; every
ranking score is "higher = keep"; ties are broken by a random permutation (never index order).
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


def clipscore(image_features: torch.Tensor, text_features: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """``scale * max(cos(image_i, text_i), 0)`` per pair."""
    cos = (F.normalize(image_features.float(), dim=-1) * F.normalize(text_features.float(), dim=-1)).sum(-1)
    return scale * cos.clamp_min(0)


def infonce_directions(image_features: torch.Tensor, text_features: torch.Tensor,
                       logit_scale: torch.Tensor) -> torch.Tensor:
    """[B, 2]: each pair's image->text cross-entropy (its row of the batch's logits) and
    text->image cross-entropy (its column)."""
    logits = logit_scale.float() * F.normalize(image_features.float(), dim=-1) @ F.normalize(
        text_features.float(), dim=-1).T
    labels = torch.arange(len(logits), device=logits.device)
    rows = F.cross_entropy(logits, labels, reduction="none")
    cols = F.cross_entropy(logits.T, labels, reduction="none")
    return torch.stack([rows, cols], dim=1)


def per_sample_infonce(image_features: torch.Tensor, text_features: torch.Tensor,
                       logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of each pair within the batch: the mean of its two directions."""
    return infonce_directions(image_features, text_features, logit_scale).mean(1)


def contrastive_gradient(image_features: torch.Tensor, text_features: torch.Tensor,
                         logit_scale: torch.Tensor) -> torch.Tensor:
    """[B, 2d]: the gradient of each pair's symmetric InfoNCE ``l_i`` with respect to its own
    normalised embeddings ``(u_i, v_i)``, in closed form (no autograd).

    With ``s`` the logit scale, ``P`` the row softmax and ``Q`` the column softmax of
    ``s U V^T``: ``dl_i/du_i = s/2 (sum_j P_ij v_j - v_i + (Q_ii - 1) v_i)`` and
    ``dl_i/dv_i = s/2 (sum_j Q_ji u_j - u_i + (P_ii - 1) u_i)``. This is the contrastive
    counterpart of DivBS's last-layer gradient (the gradient at the model's output layer).
    O(B^2 d).
    """
    u = F.normalize(image_features.float(), dim=-1)
    v = F.normalize(text_features.float(), dim=-1)
    s = logit_scale.float()
    logits = s * u @ v.T
    p = logits.softmax(dim=1)
    q = logits.softmax(dim=0)
    grad_u = p @ v - v + (q.diagonal() - 1)[:, None] * v
    grad_v = q.T @ u - u + (p.diagonal() - 1)[:, None] * u
    return torch.cat([grad_u, grad_v], dim=1) * (s / 2)


def num_kept(batch_size: int, ratio: float) -> int:
    """``k = max(1, round(ratio * B))``."""
    return max(1, min(batch_size, round(ratio * batch_size)))


def uniform(n: int, generator: Optional[torch.Generator], device) -> torch.Tensor:
    """``n`` uniform draws from the (CPU) generator, on ``device``: the same draws on CPU and CUDA."""
    return torch.rand(n, generator=generator, device="cpu").to(device)


def select_topk(score: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Indices of the ``k`` highest scores; equal scores are ordered by a random permutation."""
    perm = torch.randperm(len(score), generator=generator, device="cpu").to(score.device)
    order = torch.argsort(score[perm], descending=True, stable=True)
    return perm[order[:k]]


def batch_ranks(values: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """0-based ascending rank of each value in the batch; equal values in random order."""
    n = len(values)
    ranks = torch.empty(n, dtype=torch.long, device=values.device)
    ranks[select_topk(values, n, generator)] = torch.arange(n - 1, -1, -1, device=values.device)
    return ranks


@dataclass
class BatchScores:
    """What the no-grad scoring pass measured for one candidate batch of ``B`` samples."""
    curr: torch.Tensor                          # [B] CLIPScore of the current model
    loss: Optional[torch.Tensor] = None         # [B] per-sample symmetric InfoNCE
    loss_directions: Optional[torch.Tensor] = None  # [B, 2] image->text, text->image InfoNCE
    oracle: Optional[torch.Tensor] = None       # [B] CLIPScore of a frozen oracle model
    oracle_loss: Optional[torch.Tensor] = None  # [B] symmetric InfoNCE of the oracle model
    gradient: Optional[torch.Tensor] = None     # [B, 2d] ``contrastive_gradient``

    @classmethod
    def from_features(cls, image_features, text_features, logit_scale=None, scale=100.0, gradient=False):
        """CLIPScore always; the losses when ``logit_scale`` is given; the gradient proxy on request."""
        scores = cls(clipscore(image_features, text_features, scale))
        if logit_scale is not None:
            scores.loss_directions = infonce_directions(image_features, text_features, logit_scale)
            scores.loss = scores.loss_directions.mean(1)
            if gradient:
                scores.gradient = contrastive_gradient(image_features, text_features, logit_scale)
        return scores

    def fields(self) -> dict:
        """The measured fields (``None`` ones left out), e.g. to gather them across ranks."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if getattr(self, f) is not None}


@dataclass
class History:
    """Per-sample history for the candidate batch, as read from the history store."""
    score: torch.Tensor   # [B] stored score (meaning depends on the strategy); 0 where unseen
    seen: torch.Tensor    # [B] bool, the key has a stored score


@dataclass
class Decision:
    kept: torch.Tensor                         # [k] indices into the batch
    rank: torch.Tensor                         # [B] the ranking score ("delta" in records)
    hist: torch.Tensor                         # [B] history used for the decision (NaN if none)
    new_history: Optional[torch.Tensor] = None  # [B] score to store; None: store nothing
    store_mask: Optional[torch.Tensor] = None   # [B] bool, which rows of new_history to store
    # [k] loss weight of each kept sample: the trained loss is sum(weights * l) / B over the
    # kept samples, B the candidate batch size. None: the plain mean over the kept samples.
    weights: Optional[torch.Tensor] = None


class Strategy:
    """Base class: rank the batch, keep the top ``k``.

    Strategies with state beyond the history store get ``begin_epoch`` (with the mean of the
    stored scores over every key) and ``end_epoch`` (with the epoch's mean scoring-pass loss)
    and save it through ``state_dict``. ``variable_kept`` ones ignore ``k``: they keep a random
    number of samples and may weight their losses (``Decision.weights``).
    """
    name = "base"
    needs_history = False
    needs_loss = False
    needs_oracle = False
    needs_gradient = False
    needs_history_mean = False  # begin_epoch gets the mean stored score
    needs_epoch_loss = False    # end_epoch gets the epoch's mean loss
    variable_kept = False

    def begin_epoch(self, epoch: int, history_mean: Optional[float] = None) -> None:
        pass

    def end_epoch(self, epoch: int, mean_loss: Optional[float] = None) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def rank(self, scores: BatchScores, history: Optional[History], epoch: int,
             generator: Optional[torch.Generator]) -> torch.Tensor:
        raise NotImplementedError

    def decide(self, scores: BatchScores, history: Optional[History], k: int, epoch: int,
               generator: Optional[torch.Generator] = None) -> Decision:
        rank = self.rank(scores, history, epoch, generator)
        nan = torch.full_like(scores.curr, float("nan"))
        return Decision(select_topk(rank, k, generator), rank, nan)


class RandomSelection(Strategy):
    name = "random"

    def rank(self, scores, history, epoch, generator):
        return uniform(len(scores.curr), generator, scores.curr.device)


class SmallLoss(Strategy):
    name = "small-loss"
    needs_loss = True

    def rank(self, scores, history, epoch, generator):
        return -scores.loss


class BigLoss(Strategy):
    name = "big-loss"
    needs_loss = True

    def rank(self, scores, history, epoch, generator):
        return scores.loss


class SelfClipScore(Strategy):
    name = "clipscore"

    def rank(self, scores, history, epoch, generator):
        return scores.curr


class OracleClipScore(Strategy):
    """The k highest CLIPScores of a frozen oracle model (the paper's CLIPScore* row)."""
    name = "clipscore-oracle"
    needs_oracle = True

    def rank(self, scores, history, epoch, generator):
        return scores.oracle


class DissectMomentum(Strategy):
    """``delta = hist - curr``; keep the largest; then ``hist <- beta*hist + (1-beta)*curr``.

    A first visit starts from ``hist = curr`` (``delta = 0``), so unseen samples rank in the
    middle and among themselves in random order (the tie-break of ``select_topk``).
    """
    name = "dissect-mome"
    needs_history = True

    def __init__(self, momentum: float = 0.9):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"--dissect-momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum

    def decide(self, scores, history, k, epoch, generator=None):
        hist = torch.where(history.seen, history.score, scores.curr)
        delta = hist - scores.curr
        new = self.momentum * hist + (1.0 - self.momentum) * scores.curr
        return Decision(select_topk(delta, k, generator), delta, hist, new)


class DissectWarmup(Strategy):
    """Warm-up epochs: keep a random ``k`` and record each sample's CLIPScore (the last
    warm-up visit wins). Afterwards: ``delta = (W - mean_batch W) - (curr - mean_batch curr)``.

    A sample with no warm-up score gets ``delta = 0`` (means taken over the samples that have
    one) and its current score is recorded as its W at that first visit.
    """
    name = "dissect-warmup"
    needs_history = True

    def __init__(self, warmup_epochs: int = 5):
        if warmup_epochs < 0:
            raise ValueError(f"--dissect-warmup-epochs must be >= 0, got {warmup_epochs}")
        self.warmup_epochs = warmup_epochs

    def decide(self, scores, history, k, epoch, generator=None):
        curr = scores.curr
        if epoch < self.warmup_epochs:
            rank = RandomSelection().rank(scores, history, epoch, generator)
            hist = torch.where(history.seen, history.score, torch.full_like(curr, float("nan")))
            return Decision(select_topk(rank, k, generator), rank, hist, curr)
        seen = history.seen
        n_seen = seen.sum().clamp_min(1)
        mean_w = (history.score * seen).sum() / n_seen
        mean_c = (curr * seen).sum() / n_seen
        delta = torch.where(seen, (history.score - mean_w) - (curr - mean_c), torch.zeros_like(curr))
        hist = torch.where(seen, history.score, torch.full_like(curr, float("nan")))
        return Decision(select_topk(delta, k, generator), delta, hist, curr, store_mask=~seen)


class Learnability(Strategy):
    """RHO-LOSS / JEST-style learnability ``loss_learner - loss_reference``: the k highest.

    The reference is the frozen ``--oracle-*`` model, scored on the same candidate batch with
    its own logit scale. (JEST's joint sampling of sub-batches is not implemented: this is the
    per-sample score of RHO-LOSS and of JEST's "hard learnability".)
    """
    name = "learnability"
    needs_loss = True
    needs_oracle = True

    def rank(self, scores, history, epoch, generator):
        return scores.loss - scores.oracle_loss


def _keep_at_least_one(drop: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """``drop`` with the sample of the highest draw spared when every sample would be dropped
    (a contrastive step needs a batch); no host sync."""
    spare = torch.zeros_like(drop)
    spare[draws.argmax()] = True
    return drop & ~(drop.all() & spare)


class InfoBatch(Strategy):
    """InfoBatch's soft pruning (Qin et al., ICLR 2024) on the candidate batch.

    Score = the sample's last recorded loss. A sample whose score is below the mean score of
    every recorded sample (taken at the start of the epoch, over all ranks) is "well learned"
    and dropped with probability ``prune``; the surviving well-learned samples get loss weight
    ``1 / (1 - prune)``, so that the expected loss of the batch equals its full loss. Samples
    without a score (first visits) and samples at or above the mean are always kept. No pruning
    from epoch ``(1 - anneal) * epochs`` on. The scores recorded are the scoring pass's losses
    of the samples trained on (InfoBatch records the training loss of the trained samples).
    """
    name = "infobatch"
    needs_history = True
    needs_loss = True
    needs_history_mean = True
    variable_kept = True

    def __init__(self, prune: float = 0.5, anneal: float = 0.125, epochs: int = 1):
        if not 0.0 <= prune < 1.0:
            raise ValueError(f"--infobatch-prune must be in [0, 1), got {prune}")
        if not 0.0 <= anneal <= 1.0:
            raise ValueError(f"--infobatch-anneal must be in [0, 1], got {anneal}")
        self.prune, self.anneal, self.epochs = prune, anneal, max(1, epochs)
        self.threshold = float("-inf")  # nothing is well learned before a mean exists

    def prunes_in(self, epoch: int) -> bool:
        return epoch < (1.0 - self.anneal) * self.epochs

    def begin_epoch(self, epoch, history_mean=None):
        valid = history_mean is not None and math.isfinite(history_mean)
        self.threshold = history_mean if valid else float("-inf")

    def decide(self, scores, history, k, epoch, generator=None):
        loss = scores.loss
        draws = uniform(len(loss), generator, loss.device)
        well_learned = history.seen & (history.score < self.threshold)
        drop = well_learned & (draws < self.prune) if self.prunes_in(epoch) else torch.zeros_like(well_learned)
        drop = _keep_at_least_one(drop, draws)
        kept_mask = ~drop
        kept = kept_mask.nonzero().squeeze(1)
        rescale = 1.0 / (1.0 - self.prune) if self.prunes_in(epoch) else 1.0
        weights = torch.where(well_learned, torch.full_like(loss, rescale), torch.ones_like(loss))[kept]
        hist = torch.where(history.seen, history.score, torch.full_like(loss, float("nan")))
        rank = torch.where(history.seen, history.score, loss)  # last recorded loss, else the current
        return Decision(kept, rank, hist, loss, store_mask=kept_mask, weights=weights)


class Scan(Strategy):
    """SCAN's dynamic bootstrapping pruning (Guo & Kankanhalli, arXiv 2411.09126), streamed.

    Our reading of the method:

    - Warm-up on full data until the epoch's mean loss improves by less than
      ``warmup_improvement`` (relative) over the previous epoch, or for ``warmup_epochs`` epochs
      when given.
    - Then cycles of ``1 + PRUNE_EPOCHS`` epochs. The first (preparation) epoch trains on every
      candidate and nominates, per direction (image->text and text->image InfoNCE), the
      ``nominate`` fraction with the highest loss (ill-matched) and the fraction with the lowest
      (redundant); a pair is nominated when both directions agree (highest in both, or lowest in
      both). The next epochs prune a random ``0.5 * (1 + cos(pi * (T - e) / T))`` of the
      nominated pairs, e = 1..T, T = 3: 0.25, 0.75, 1.0.
    - Deliberate difference: the fractions are taken within each candidate batch, not over the
      whole epoch, so that the model's progress during the preparation epoch does not nominate
      early batches as ill-matched and late ones as redundant; and it streams (one float a key).

    The history stores the nomination (1.0 nominated, 0.0 not) of the last preparation epoch.
    """
    name = "scan"
    needs_history = True
    needs_loss = True
    needs_epoch_loss = True
    variable_kept = True
    PRUNE_EPOCHS = 3

    def __init__(self, nominate: float = 0.3, warmup_improvement: float = 0.3,
                 warmup_epochs: Optional[int] = None):
        if not 0.0 < nominate <= 0.5:
            raise ValueError(f"--scan-nominate must be in (0, 0.5], got {nominate}")
        if warmup_epochs is not None and warmup_epochs < 0:
            raise ValueError(f"--scan-warmup-epochs must be >= 0, got {warmup_epochs}")
        self.nominate_fraction, self.warmup_improvement = nominate, warmup_improvement
        self.cycle_start = warmup_epochs  # None: decided by the loss criterion
        self.last_loss = None

    def prune_fraction(self, epoch: int) -> Optional[float]:
        """None in warm-up; 0.0 in a preparation epoch; else the fraction of nominated pairs pruned."""
        if self.cycle_start is None or epoch < self.cycle_start:
            return None
        e = (epoch - self.cycle_start) % (1 + self.PRUNE_EPOCHS)
        t = self.PRUNE_EPOCHS
        return 0.0 if e == 0 else 0.5 * (1.0 + math.cos(math.pi * (t - e) / t))

    def end_epoch(self, epoch, mean_loss=None):
        if self.cycle_start is not None or mean_loss is None:
            return
        previous, self.last_loss = self.last_loss, mean_loss
        if previous is not None and previous > 0 and (previous - mean_loss) / previous < self.warmup_improvement:
            self.cycle_start = epoch + 1

    def nominated(self, loss_directions: torch.Tensor, generator=None) -> torch.Tensor:
        """[B] bool: in the top ``nominate`` fraction of both directions, or in the bottom of both."""
        n = len(loss_directions)
        m = int(self.nominate_fraction * n)
        ranks = torch.stack([batch_ranks(loss_directions[:, d], generator) for d in range(2)], dim=1)
        return (ranks >= n - m).all(1) | (ranks < m).all(1)

    def decide(self, scores, history, k, epoch, generator=None):
        loss = scores.loss
        fraction = self.prune_fraction(epoch)
        everything = torch.arange(len(loss), device=loss.device)
        nan = torch.full_like(loss, float("nan"))
        if fraction is None:  # warm-up: full data, nothing stored
            return Decision(everything, torch.ones_like(loss), nan)
        if fraction == 0.0:  # preparation: full data, store the nomination
            nominated = self.nominated(scores.loss_directions, generator)
            return Decision(everything, torch.ones_like(loss), nan, nominated.float())
        nominated = history.seen & (history.score > 0.5)
        draws = uniform(len(loss), generator, loss.device)
        drop = _keep_at_least_one(nominated & (draws < fraction), draws)
        rank = torch.where(nominated, torch.full_like(loss, 1.0 - fraction), torch.ones_like(loss))
        hist = torch.where(history.seen, history.score, torch.full_like(loss, float("nan")))
        return Decision((~drop).nonzero().squeeze(1), rank, hist)

    def state_dict(self):
        return {"cycle_start": self.cycle_start, "last_loss": self.last_loss}

    def load_state_dict(self, state):
        self.cycle_start, self.last_loss = state["cycle_start"], state["last_loss"]


class DivBS(Strategy):
    """Diversified batch selection (Hong et al., ICML 2024), reference-model free.

    Each candidate's feature is its ``contrastive_gradient`` (the gradient of its InfoNCE at
    the embeddings). Greedy, orthogonal-matching-pursuit style: the residual starts at the
    batch's mean gradient; each of the ``k`` rounds draws one unchosen sample with probability
    proportional to ``|g_i . r|`` (inverse-CDF on the device, no host sync), orthogonalises its
    gradient against the chosen basis (Gram-Schmidt) and removes that direction from the
    residual. Once the residual is spent, the remaining picks are uniform. Cost per batch:
    O(k B D + k^2 D) for B candidates of gradient width D (= 2 x embedding width), with k
    sequential rounds of batched vector operations.
    """
    name = "divbs"
    needs_loss = True
    needs_gradient = True

    def decide(self, scores, history, k, epoch, generator=None):
        grads = scores.gradient.float()
        n, width = grads.shape
        device = grads.device
        draws = uniform(k, generator, device)  # one per round: inverse-CDF sampling
        residual = grads.mean(0)
        basis = torch.zeros(k, width, device=device)
        available = torch.ones(n, dtype=torch.bool, device=device)
        picks = torch.empty(k, dtype=torch.long, device=device)
        scale = grads.norm(dim=1).max().clamp_min(1e-12)
        for t in range(k):
            weight = (grads @ residual).abs() * available
            weight = torch.where(weight.sum() > 0, weight, available.float())  # residual spent: uniform
            cumulative = torch.cumsum(weight, 0)
            target = torch.minimum(draws[t] * cumulative[-1], cumulative[-1] * (1 - 1e-6))
            pick = torch.searchsorted(cumulative, target.reshape(1), right=True)[0].clamp_max(n - 1)
            picks[t] = pick
            available[pick] = False
            g = grads[pick]
            direction = g - basis[:t].T @ (basis[:t] @ g)
            norm = direction.norm()
            direction = torch.where(norm > 1e-6 * scale, direction / norm.clamp_min(1e-30), torch.zeros_like(direction))
            basis[t] = direction
            residual = residual - (residual @ direction) * direction
        rank = torch.zeros(n, device=device)
        rank[picks] = (k - torch.arange(k, device=device, dtype=torch.float32)) / k  # pick order
        return Decision(picks, rank, torch.full((n,), float("nan"), device=device))


def make_strategy(name: str, momentum: float = 0.9, warmup_epochs: int = 5, epochs: int = 1,
                  infobatch_prune: float = 0.5, infobatch_anneal: float = 0.125, scan_nominate: float = 0.3,
                  scan_warmup_improvement: float = 0.3, scan_warmup_epochs: Optional[int] = None) -> Strategy:
    """The strategy called ``name`` (``--selection``), with its options; ``epochs``: the run's total."""
    if name == "dissect-mome":
        return DissectMomentum(momentum)
    if name == "dissect-warmup":
        return DissectWarmup(warmup_epochs)
    if name == "infobatch":
        return InfoBatch(infobatch_prune, infobatch_anneal, epochs)
    if name == "scan":
        return Scan(scan_nominate, scan_warmup_improvement, scan_warmup_epochs)
    simple = {cls.name: cls for cls in (RandomSelection, SmallLoss, BigLoss, SelfClipScore, OracleClipScore,
                                        DivBS, Learnability)}
    if name not in simple:
        raise ValueError(f"--selection: unknown strategy {name!r}; choose from {STRATEGIES + ORACLE_STRATEGIES}")
    return simple[name]()


STRATEGIES = ("random", "small-loss", "big-loss", "clipscore", "dissect-warmup", "dissect-mome",
              "infobatch", "scan", "divbs")
ORACLE_STRATEGIES = ("clipscore-oracle", "learnability")  # need --oracle-model and --oracle-checkpoint
