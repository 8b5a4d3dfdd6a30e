"""Data-selection scores computed from a frozen oracle's embeddings (pure tensor code).

``u``: image embeddings [N, d], ``v``: text embeddings [N, d], ``g``: target-set image
embeddings [M, d]; all L2-normalised by the caller (the functions normalise again, cheaply).
Every score is "higher = keep". Everything works in chunks so that the memory does not grow with
N x M or with the negCLIPLoss batch size squared.

- ``clipscore``: ``w * max(cos(u_i, v_i), 0)``;
- ``negcliploss``: ``S_ii - mean over K random batchings of tau/2 (lse_j S_ij/tau + lse_j S_ji/tau)``,
  i.e. minus tau times the sample's symmetric CLIP loss against random batches of the pool;
  the pool is split into ceil(N / B) batches whose sizes differ by at most one (no small last
  batch with few negatives);
- ``normsim(p=2)``: ``||G u_i||_2``, via the d x d matrix ``G^T G`` (no N x M product);
  ``normsim(p=inf)``: ``max_t g_t . u_i``, in candidate x target chunks;
- ``vas``: ``u_i^T Sigma u_i`` with ``Sigma = G^T G / M`` (ranks like NormSim-2);
- ``vas_d``: VAS against the pool itself, re-estimated over ``rounds`` rounds while an equal share
  of the surplus is dropped each round (see ``vas_d``).
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F

from open_clip_dissect.core.strategies import clipscore  # same formula online and offline
from open_clip_dissect.errors import InputError

__all__ = [
    "clipscore",
    "negcliploss",
    "normsim",
    "vas",
    "vas_d",
    "second_moment",
    "check_negcliploss_options",
    "check_vas_d_options",
]


def check_negcliploss_options(batch_size: int, repeats: int) -> None:
    if batch_size < 2:
        raise InputError("--negcliploss-batch-size", f"must be >= 2, got {batch_size}")
    if repeats < 1:
        raise InputError("--negcliploss-repeats", f"must be >= 1, got {repeats}")


def check_vas_d_options(keep_fraction: float, rounds: int) -> None:
    if not 0.0 < keep_fraction <= 1.0:
        raise InputError("--vas-d-fraction", f"must be in (0, 1], got {keep_fraction}")
    if rounds < 1:
        raise InputError("--vas-d-rounds", f"must be >= 1, got {rounds}")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def _batch_loss_terms(u: torch.Tensor, v: torch.Tensor, tau: float, chunk: int) -> torch.Tensor:
    """``tau/2 * (lse_j S_ij / tau + lse_j S_ji / tau)`` for one batch, in row chunks (the column
    log-sum-exp is accumulated on the fly, so no B x B matrix is held)."""
    n = len(u)
    rows = torch.empty(n, dtype=torch.float32, device=u.device)
    col_max = torch.full((n,), -math.inf, device=u.device)
    col_sum = torch.zeros(n, device=u.device)
    for start in range(0, n, chunk):
        s = (u[start : start + chunk] @ v.T) / tau  # [c, n]
        rows[start : start + chunk] = torch.logsumexp(s, dim=1)
        block_max = s.max(0).values
        new_max = torch.maximum(col_max, block_max)
        col_sum = col_sum * torch.exp(col_max - new_max) + torch.exp(s - new_max).sum(0)
        col_max = new_max
    cols = col_max + torch.log(col_sum)
    return tau / 2 * (rows + cols)


def negcliploss(
    u: torch.Tensor,
    v: torch.Tensor,
    tau: float = 0.01,
    batch_size: int = 32768,
    repeats: int = 10,
    seed: int = 0,
    chunk: int = 4096,
) -> torch.Tensor:
    """negCLIPLoss of every pair against ``repeats`` random batchings of the pool."""
    check_negcliploss_options(batch_size, repeats)
    u, v = _unit(u), _unit(v)
    n = len(u)
    diagonal = (u * v).sum(-1)
    penalty = torch.zeros(n, device=u.device)
    generator = torch.Generator().manual_seed(seed)
    num_batches = max(1, math.ceil(n / batch_size))
    for _ in range(repeats):
        perm = torch.randperm(n, generator=generator).to(u.device)
        for batch in torch.tensor_split(perm, num_batches):  # sizes differ by at most one
            penalty[batch] += _batch_loss_terms(u[batch], v[batch], tau, chunk)
    return diagonal - penalty / repeats


def second_moment(g: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """``G^T G / M`` (uncentred second moment) of the target embeddings, in chunks."""
    g = _unit(g)
    sigma = torch.zeros(g.shape[1], g.shape[1], device=g.device)
    for start in range(0, len(g), chunk):
        block = g[start : start + chunk]
        sigma += block.T @ block
    return sigma / max(len(g), 1)


def _quadratic(u: torch.Tensor, sigma: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    u = _unit(u)
    return torch.cat([((u[s : s + chunk] @ sigma) * u[s : s + chunk]).sum(-1) for s in range(0, len(u), chunk)])


def normsim(u: torch.Tensor, g: torch.Tensor, p: float = 2, chunk: int = 8192) -> torch.Tensor:
    """``||G u_i||_p`` for p = 2, or ``max_t g_t . u_i`` for p = inf."""
    if p == 2:
        return (_quadratic(u, second_moment(g)) * len(g)).clamp_min(0).sqrt()
    if not math.isinf(p):
        raise ValueError(f"normsim supports p = 2 and p = inf, got {p}")
    u, g = _unit(u), _unit(g)
    best = torch.full((len(u),), -math.inf, device=u.device)
    for i in range(0, len(u), chunk):
        for t in range(0, len(g), chunk):
            best[i : i + chunk] = torch.maximum(
                best[i : i + chunk], (u[i : i + chunk] @ g[t : t + chunk].T).max(1).values
            )
    return best


def vas(u: torch.Tensor, g: Optional[torch.Tensor] = None, sigma: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Variance alignment ``u_i^T Sigma_target u_i``."""
    return _quadratic(u, second_moment(g) if sigma is None else sigma)


def vas_d(u: torch.Tensor, keep_fraction: float, rounds: int = 5) -> torch.Tensor:
    """VAS-D: the target is the pool itself. Sigma starts as the second moment of the whole pool;
    each of ``rounds`` rounds drops an equal share of the surplus (pool size - kept size) with the
    lowest VAS against the current survivors' Sigma, then re-estimates Sigma from the survivors.
    Returns a score whose top ``keep_fraction`` is exactly the VAS-D selection: the round a sample
    survived to, plus its VAS at that round squashed into [0, 1)."""
    check_vas_d_options(keep_fraction, rounds)
    n = len(u)
    target = max(1, round(keep_fraction * n))
    alive = torch.ones(n, dtype=torch.bool, device=u.device)
    score = torch.zeros(n, device=u.device)
    surplus = n - target
    for r in range(rounds):
        sigma = second_moment(u[alive])
        values = vas(u, sigma=sigma)
        drop_now = surplus * (r + 1) // rounds - surplus * r // rounds
        candidates = alive.nonzero().squeeze(1)
        order = candidates[torch.argsort(values[candidates], stable=True)]
        dropped = order[:drop_now]
        score[candidates] = r + torch.sigmoid(values[candidates])  # survived to round r
        alive[dropped] = False
    score[alive] = rounds + torch.sigmoid(vas(u, sigma=second_moment(u[alive]))[alive])
    return score
