"""Oracle-based scores (issue 6 groundwork) against hand-computed examples."""

import math

import pytest
import torch

from open_clip_dissect.core import oracle_scores as O
from open_clip_dissect.core.strategies import per_sample_infonce
from open_clip_dissect.errors import InputError


def _rand(n, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_negcliploss_is_minus_tau_times_the_symmetric_clip_loss():
    u, v = _rand(6), _rand(6, seed=1)
    tau = 0.01  # exp(S / 0.01) would overflow fp32: the code must stay in log space
    got = O.negcliploss(u, v, tau=tau, batch_size=6, repeats=1)
    want = -tau * per_sample_infonce(u, v, torch.tensor(1 / tau))
    assert torch.isfinite(got).all() and torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(O.negcliploss(u, v, tau=tau, batch_size=6, repeats=1, chunk=2), got, atol=1e-5)


def test_negcliploss_by_hand_two_pairs():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    tau = 0.5
    # S = [[1, 1], [0, 0]]; sample 0: rows lse(2, 2) = 2 + ln 2, cols lse(2, 0) = ln(e^2 + 1)
    s0 = 1 - tau / 2 * ((2 + math.log(2)) + math.log(math.exp(2) + 1))
    # sample 1: rows lse(0, 0) = ln 2, cols lse(2, 0) = ln(e^2 + 1); S_11 = 0
    s1 = 0 - tau / 2 * (math.log(2) + math.log(math.exp(2) + 1))
    got = O.negcliploss(u, v, tau=tau, batch_size=2, repeats=3)
    assert torch.allclose(got, torch.tensor([s0, s1]), atol=1e-6)


def test_negcliploss_batches_have_no_small_remainder():
    # 10 samples in batches of at most 4: sizes 4, 3, 3 (not 4, 4, 2); K repeats are averaged.
    u, v = _rand(10), _rand(10, seed=2)
    a = O.negcliploss(u, v, tau=0.07, batch_size=4, repeats=5, seed=3)
    b = O.negcliploss(u, v, tau=0.07, batch_size=4, repeats=5, seed=3)
    assert torch.equal(a, b)  # seeded
    assert not torch.equal(a, O.negcliploss(u, v, tau=0.07, batch_size=4, repeats=5, seed=4))
    with pytest.raises(InputError, match="--negcliploss-batch-size: must be >= 2"):
        O.negcliploss(u, v, batch_size=1)


def test_normsim_and_vas_by_hand():
    u = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    # G u_0 = [1, 0, .6]; G u_1 = [.6, .8, 1]
    assert torch.allclose(O.normsim(u, g, p=2), torch.tensor([math.sqrt(1.36), math.sqrt(2.0)]), atol=1e-6)
    assert torch.allclose(O.normsim(u, g, p=math.inf), torch.tensor([1.0, 1.0]), atol=1e-6)
    assert torch.allclose(O.normsim(u, g, p=math.inf, chunk=1), torch.tensor([1.0, 1.0]), atol=1e-6)
    assert torch.allclose(O.vas(u, g), torch.tensor([1.36 / 3, 2.0 / 3]), atol=1e-6)
    with pytest.raises(ValueError, match="p = 2 and p = inf"):
        O.normsim(u, g, p=1)


def test_normsim_inf_takes_the_signed_maximum():
    u = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[-1.0, 0.0], [0.0, 1.0]])
    assert O.normsim(u, g, p=math.inf).item() == pytest.approx(0.0)


def test_vas_d_keeps_exactly_the_target_and_one_round_is_vas():
    u = _rand(12, d=4, seed=5)
    score = O.vas_d(u, keep_fraction=0.5, rounds=1)
    kept = set(torch.topk(score, 6).indices.tolist())
    assert kept == set(torch.topk(O.vas(u, u), 6).indices.tolist())  # T = 1: VAS, pool as target
    multi = O.vas_d(u, keep_fraction=0.25, rounds=3)
    assert (multi >= 3).sum() == 3  # exactly round(0.25 * 12) survivors
