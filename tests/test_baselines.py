"""InfoBatch, SCAN, DivBS and learnability as pure tensor code, and the weighted CLIP loss."""

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from open_clip_dissect.core import strategies as S
from open_clip_dissect.core.early_learning import EpochSignals
from open_clip_dissect.core.selector import Selector
from open_clip_dissect.openclip.training.weighted_loss import LossWeights, WeightedClipLoss


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _history(score, seen):
    return S.History(torch.tensor(score), torch.tensor(seen))


# ----------------------------------------------------------------------------- learnability


def test_learnability_keeps_the_largest_learner_minus_reference_loss():
    scores = S.BatchScores(
        torch.zeros(4), loss=torch.tensor([3.0, 1.0, 2.0, 0.5]), oracle_loss=torch.tensor([1.0, 0.5, 0.2, 0.1])
    )
    d = S.create_strategy("learnability").decide(scores, None, 2, 0, _g())
    # learnability = [2.0, 0.5, 1.8, 0.4]: a noisy pair (high loss for both) is not learnable
    assert torch.allclose(d.rank, torch.tensor([2.0, 0.5, 1.8, 0.4]))
    assert sorted(d.kept.tolist()) == [0, 2]
    assert S.create_strategy("learnability").needs_oracle


# ----------------------------------------------------------------------------- InfoBatch


def test_infobatch_by_hand():
    s = S.InfoBatch(prune=0.5, anneal=0.25, epochs=4)
    s.begin_epoch(1, history_mean=2.5)
    history = _history([1.0, 2.0, 3.0, 4.0, 0.0, 1.5], [True, True, True, True, False, True])
    scores = S.BatchScores(torch.zeros(6), loss=torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0, 4.0]))
    d = s.decide(scores, history, k=1, epoch=1, generator=_g(3))
    draws = torch.rand(6, generator=_g(3))
    # well learned (seen, last loss < 2.5): samples 0, 1, 5; each dropped when its draw < 0.5
    dropped = {i for i in (0, 1, 5) if draws[i] < 0.5}
    assert set(d.kept.tolist()) == set(range(6)) - dropped
    expected_w = {i: (2.0 if i in (0, 1, 5) else 1.0) for i in range(6)}
    assert d.weights.tolist() == [expected_w[i] for i in d.kept.tolist()]
    assert d.store_mask.tolist() == [i not in dropped for i in range(6)]  # trained samples' losses
    assert torch.equal(d.new_history, scores.loss)
    # unseen sample 4 ranks by its current loss
    assert d.rank.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 1.5]

    # the last quarter of the epochs (epoch 3 of 4) trains everything with weight 1
    late = s.decide(scores, history, 1, epoch=3, generator=_g(3))
    assert late.kept.tolist() == list(range(6)) and late.weights.tolist() == [1.0] * 6
    # before any mean exists (epoch 0) nothing is well learned
    fresh = S.InfoBatch(0.5, 0.0, 4)
    fresh.begin_epoch(0, None)
    assert fresh.decide(scores, history, 1, 0, _g()).kept.tolist() == list(range(6))


def test_infobatch_never_drops_a_whole_batch():
    s = S.InfoBatch(prune=0.99, epochs=2)
    s.begin_epoch(0, history_mean=10.0)
    history = _history([1.0] * 5, [True] * 5)
    for seed in range(20):
        d = s.decide(S.BatchScores(torch.zeros(5), loss=torch.ones(5)), history, 1, 0, _g(seed))
        assert len(d.kept) >= 1


def test_infobatch_rescaling_keeps_the_expected_loss():
    """Monte Carlo over many draws on a fixed batch: E[sum_kept w l / B] = mean(l); without
    the 1 / (1 - p) rescaling the estimate is far off (the check can fail)."""
    gen = torch.Generator().manual_seed(0)
    batch = 64
    loss = torch.rand(batch, generator=gen) * 4
    history = S.History(loss.clone(), torch.ones(batch, dtype=torch.bool))
    s = S.InfoBatch(prune=0.5, anneal=0.0, epochs=10)
    s.begin_epoch(1, history_mean=float(loss.mean()))
    scores = S.BatchScores(torch.zeros(batch), loss=loss)
    draws_g = torch.Generator().manual_seed(1)
    weighted, unweighted = [], []
    for _ in range(4000):
        d = s.decide(scores, history, 1, 1, draws_g)
        weighted.append(float((d.weights * loss[d.kept]).sum()) / batch)
        unweighted.append(float(loss[d.kept].sum()) / batch)
    weighted = torch.tensor(weighted, dtype=torch.float64)
    stderr = weighted.std() / math.sqrt(len(weighted))
    full = float(loss.mean())
    assert abs(float(weighted.mean()) - full) < 4 * stderr
    assert abs(float(torch.tensor(unweighted).mean()) - full) > 20 * stderr
    assert float(stderr) > 0


def test_infobatch_flags_are_checked():
    with pytest.raises(ValueError, match="--infobatch-prune"):
        S.create_strategy("infobatch", prune=1.0)
    with pytest.raises(ValueError, match="--infobatch-anneal"):
        S.create_strategy("infobatch", anneal=1.5)


def test_history_mean_reaches_infobatch_through_the_selector():
    selector = Selector(S.create_strategy("infobatch", epochs=4), ratio=0.5)
    from open_clip_dissect.core.history import hash_keys

    hashes = hash_keys([f"k{i}" for i in range(4)])
    selector.store.update(hashes, torch.tensor([1.0, 2.0, 3.0, 6.0]), epoch=0)
    selector.begin_epoch(1)
    assert selector.strategy.threshold == pytest.approx(3.0)


# ----------------------------------------------------------------------------- SCAN


def test_scan_schedule_and_warmup_criterion():
    s = S.Scan(warmup_improvement=0.3)
    assert s.prune_fraction(0) is None
    s.end_epoch(0, EpochSignals(mean_loss=10.0))
    s.end_epoch(1, EpochSignals(mean_loss=6.0))  # 40% better: still warming up
    assert s.cycle_start is None
    assert "warm-up ends after epoch 2" in s.end_epoch(2, EpochSignals(mean_loss=5.0))  # 17% better
    assert s.cycle_start == 3
    fractions = [s.prune_fraction(e) for e in range(3, 11)]
    assert fractions == pytest.approx([0.0, 0.25, 0.75, 1.0, 0.0, 0.25, 0.75, 1.0])
    again = S.Scan()
    again.load_state_dict(s.state_dict())
    assert again.prune_fraction(6) == 1.0
    assert S.Scan(warmup_epochs=0).prune_fraction(0) == 0.0  # fixed warm-up: epoch 0 prepares


def test_scan_nominates_pairs_both_directions_agree_on():
    s = S.Scan(nominate=0.3)
    # 10 pairs, 3 per side. i2t: top {0, 1, 2}, bottom {7, 8, 9}; t2i: top {0, 1, 5}, bottom {6, 8, 9}
    i2t = torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0, 4.5, 4.0, 3.0, 2.0, 1.0])
    t2i = torch.tensor([9.0, 8.0, 5.0, 4.0, 3.5, 7.0, 2.5, 3.0, 2.0, 1.0])
    nominated = s.nominated(torch.stack([i2t, t2i], 1), _g())
    assert nominated.nonzero().squeeze(1).tolist() == [0, 1, 8, 9]


def test_scan_prepares_then_prunes_the_nominated():
    s = S.Scan(nominate=0.3, warmup_epochs=1)
    scores = S.BatchScores(
        torch.zeros(10), loss=torch.arange(10.0), loss_directions=torch.stack([torch.arange(10.0)] * 2, 1)
    )
    unseen = _history([0.0] * 10, [False] * 10)
    warm = s.decide(scores, unseen, 1, epoch=0, generator=_g())
    assert warm.kept.tolist() == list(range(10)) and warm.new_history is None
    prep = s.decide(scores, unseen, 1, epoch=1, generator=_g())
    assert prep.kept.tolist() == list(range(10))
    assert prep.new_history.tolist() == [1, 1, 1, 0, 0, 0, 0, 1, 1, 1]  # lowest 3 and highest 3
    stored = S.History(prep.new_history, torch.tensor([True] * 9 + [False]))  # sample 9: new
    last = s.decide(scores, stored, 1, epoch=4, generator=_g())  # third pruning epoch: fraction 1
    assert last.kept.tolist() == [3, 4, 5, 6, 9] and last.new_history is None
    assert last.weights is None
    middle = s.decide(scores, stored, 1, epoch=3, generator=_g(5))  # fraction 0.75
    draws = torch.rand(10, generator=_g(5))
    assert middle.kept.tolist() == [i for i in range(10) if not (i in (0, 1, 2, 7, 8) and draws[i] < 0.75)]


# ----------------------------------------------------------------------------- DivBS


def test_contrastive_gradient_matches_autograd():
    gen = torch.Generator().manual_seed(0)
    u = F.normalize(torch.randn(5, 3, generator=gen), dim=-1)
    v = F.normalize(torch.randn(5, 3, generator=gen), dim=-1)
    scale = torch.tensor(7.0)
    closed = S.contrastive_gradient(u, v, scale)
    for i in range(5):
        ui, vi = u.clone().requires_grad_(), v.clone().requires_grad_()
        logits = scale * ui @ vi.T
        li = (
            F.cross_entropy(logits[i : i + 1], torch.tensor([i]))
            + F.cross_entropy(logits.T[i : i + 1], torch.tensor([i]))
        ) / 2
        gu, gv = torch.autograd.grad(li, (ui, vi))
        assert torch.allclose(closed[i], torch.cat([gu[i], gv[i]]), atol=1e-5)


def test_divbs_covers_orthogonal_directions_by_hand():
    # Samples 0 and 1 share a gradient direction, sample 2 is orthogonal. r = mean = (2/3, 1/3):
    # after one of {0, 1} is picked, the residual is (0, 1/3) and only sample 2 covers it.
    grads = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scores = S.BatchScores(torch.zeros(3), gradient=grads)
    for seed in range(30):
        kept = S.create_strategy("divbs").decide(scores, None, 2, 0, _g(seed)).kept.tolist()
        assert 2 in kept and len(set(kept) & {0, 1}) == 1, kept
    # First picks follow |g . r|: (2/3, 2/3, 1/3) -> sample 2 first about 1/5 of the time
    firsts = torch.tensor([S.create_strategy("divbs").decide(scores, None, 1, 0, _g(s)).kept[0] for s in range(2000)])
    assert abs(float((firsts == 2).float().mean()) - 0.2) < 0.04
    # k = B keeps everything once the residual is spent (uniform picks)
    assert sorted(S.create_strategy("divbs").decide(scores, None, 3, 0, _g()).kept.tolist()) == [0, 1, 2]


def test_divbs_ranks_by_pick_order():
    grads = torch.eye(4)
    d = S.create_strategy("divbs").decide(S.BatchScores(torch.zeros(4), gradient=grads), None, 2, 0, _g())
    assert d.rank[d.kept].tolist() == [1.0, 0.5]
    assert float(d.rank.sum()) == 1.5


# ----------------------------------------------------------------------------- weighted loss


def _features(n=6, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        F.normalize(torch.randn(n, d, generator=gen), dim=-1),
        F.normalize(torch.randn(n, d, generator=gen), dim=-1),
        torch.tensor(10.0),
    )


def test_weighted_clip_loss_with_unit_weights_is_clip_loss():
    image, text, scale = _features()
    channel = LossWeights()
    channel.push(torch.ones(6), candidates=6)
    weighted = WeightedClipLoss.like(ClipLoss(), channel)
    assert torch.allclose(weighted(image, text, scale), ClipLoss()(image, text, scale))


def test_weighted_clip_loss_by_hand_and_with_accumulation():
    image, text, scale = _features()
    per_sample = S.per_sample_infonce(image, text, scale)
    channel = LossWeights(accum_freq=2)
    channel.push(torch.tensor([2.0, 1.0, 0.0]), candidates=5)  # 3 trained of 5 candidates
    channel.push(torch.tensor([1.0, 2.0, 2.0]), candidates=4)
    loss = WeightedClipLoss(channel)(image, text, scale, output_dict=True)["contrastive_loss"]
    w = torch.tensor([2.0, 1.0, 0.0, 1.0, 2.0, 2.0])
    assert torch.allclose(loss, (w * per_sample).sum() / 9)
    with pytest.raises(RuntimeError, match="weighted 6"):
        WeightedClipLoss(channel)(image[:4], text[:4], scale)


def test_strategy_state_travels_with_the_selector_state():
    selector = Selector(S.create_strategy("scan"), ratio=0.5)
    selector.begin_epoch(0)
    scores = S.BatchScores(
        torch.zeros(4),
        loss=torch.tensor([4.0, 3.0, 2.0, 1.0]),
        loss_directions=torch.tensor([[4.0, 4.0], [3.0, 3.0], [2.0, 2.0], [1.0, 1.0]]),
    )
    from open_clip_dissect.core.history import hash_keys

    selector.decide(hash_keys(["a", "b", "c", "d"]), scores, 0)
    selector.end_epoch()  # mean loss 2.5 recorded; one more epoch with < 30% improvement ends warm-up
    selector.begin_epoch(1)
    selector.decide(
        hash_keys(["a", "b", "c", "d"]),
        S.BatchScores(torch.zeros(4), loss=torch.full((4,), 2.0), loss_directions=torch.full((4, 2), 2.0)),
        1,
    )
    selector.end_epoch()
    assert selector.strategy.cycle_start == 2
    restored = Selector(S.create_strategy("scan"), ratio=0.5)
    restored.load_state_dict(selector.state_dict())
    assert restored.strategy.cycle_start == 2 and restored.strategy.last_loss == pytest.approx(2.0)
    with pytest.raises(ValueError, match="--selection-scope local"):
        from open_clip_dissect.distributed.communicator import Communicator
        from open_clip_dissect.distributed.exchange import RankExchange

        Selector(S.create_strategy("infobatch"), ratio=0.5, exchange=RankExchange(Communicator(0, 2)))
