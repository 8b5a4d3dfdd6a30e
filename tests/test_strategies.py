"""Strategies as pure tensor functions, against hand-computed examples."""

import math

import pytest
import torch

from open_clip_dissect.core import strategies as S
from open_clip_dissect.core.audit import audit, auroc


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_clipscore_is_scaled_clamped_cosine():
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    txt = torch.tensor([[3.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
    assert torch.allclose(S.clipscore(img, txt), torch.tensor([100.0, 0.0, 100 / math.sqrt(2)]))
    assert torch.allclose(S.clipscore(img, txt, scale=2.5), torch.tensor([2.5, 0.0, 2.5 / math.sqrt(2)]))


def test_per_sample_infonce_by_hand():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    scale = torch.tensor(2.0)
    # logits = 2 * [[1, 1], [0, 0]]; rows: CE([2,2],0)=log2, CE([0,0],1)=log2
    # cols: column 0 = [2, 0] label 0 -> log(1+e^-2); column 1 = [2, 0] label 1 -> log(e^2+1)
    expected = torch.tensor(
        [(math.log(2) + math.log(1 + math.exp(-2))) / 2, (math.log(2) + math.log(math.exp(2) + 1)) / 2]
    )
    assert torch.allclose(S.per_sample_infonce(img, txt, scale), expected, atol=1e-6)


def test_num_kept():
    assert [S.num_kept(10, r) for r in (0.01, 0.3, 0.5, 0.55, 1.0)] == [1, 3, 5, 6, 10]


def test_select_topk_ties_are_random_not_index_order():
    score = torch.tensor([1.0, 5.0, 3.0, 5.0, 0.0])
    assert set(S.select_topk(score, 2, _g()).tolist()) == {1, 3}
    assert sorted(S.select_topk(score, 5, _g()).tolist()) == [0, 1, 2, 3, 4]  # k = B
    firsts = {int(S.select_topk(torch.zeros(8), 1, _g(s))[0]) for s in range(40)}
    assert len(firsts) >= 6  # every index can win an all-ties batch


def _scores(curr, loss=None):
    return S.BatchScores(torch.tensor(curr), None if loss is None else torch.tensor(loss))


def test_loss_and_clipscore_strategies():
    scores = _scores([10.0, 30.0, 20.0, 40.0], loss=[0.5, 2.0, 1.0, 0.1])

    def pick(name, k):
        return sorted(S.create_strategy(name).decide(scores, None, k, 0, _g()).kept.tolist())

    assert pick("small-loss", 2) == [0, 3]
    assert pick("big-loss", 2) == [1, 2]
    assert pick("clipscore", 2) == [1, 3]
    assert sorted(S.create_strategy("random").decide(scores, None, 4, 0, _g()).kept.tolist()) == [0, 1, 2, 3]


def test_oracle_clipscore_ranks_by_the_oracle():
    scores = S.BatchScores(torch.tensor([90.0, 10.0, 50.0]), oracle=torch.tensor([5.0, 70.0, 30.0]))
    assert sorted(S.create_strategy("clipscore-oracle").decide(scores, None, 2, 0, _g()).kept.tolist()) == [1, 2]


def test_random_strategy_is_uniform():
    counts = torch.zeros(6)
    for seed in range(600):
        kept = S.create_strategy("random").decide(_scores([1.0] * 6), None, 2, 0, _g(seed)).kept
        counts[kept] += 1
    assert counts.sum() == 1200 and (counts - 200).abs().max() < 60


def test_dissect_momentum_by_hand():
    s = S.DissectMomentum(momentum=0.9)
    history = S.History(torch.tensor([50.0, 50.0, 0.0, 10.0]), torch.tensor([True, True, False, True]))
    d = s.decide(_scores([40.0, 70.0, 33.0, 10.0]), history, 2, epoch=3, generator=_g())
    # delta = hist - curr = [10, -20, 0 (first visit: hist = curr), 0]
    assert torch.allclose(d.rank, torch.tensor([10.0, -20.0, 0.0, 0.0]))
    assert torch.allclose(d.hist, torch.tensor([50.0, 50.0, 33.0, 10.0]))
    assert 0 in d.kept.tolist() and len(d.kept) == 2 and 1 not in d.kept.tolist()
    assert torch.allclose(d.new_history, torch.tensor([49.0, 52.0, 33.0, 10.0]))


def test_dissect_warmup_by_hand():
    s = S.DissectWarmup(warmup_epochs=2)
    history = S.History(torch.tensor([60.0, 20.0, 0.0, 40.0]), torch.tensor([True, True, False, True]))
    during = s.decide(_scores([10.0, 20.0, 30.0, 40.0]), history, 2, epoch=1, generator=_g())
    assert torch.equal(during.new_history, torch.tensor([10.0, 20.0, 30.0, 40.0]))  # last visit wins
    assert during.store_mask is None
    after = s.decide(_scores([30.0, 40.0, 99.0, 50.0]), history, 2, epoch=2, generator=_g())
    # seen: W = [60, 20, 40], mean 40; curr = [30, 40, 50], mean 40
    # delta = (W - 40) - (curr - 40) = [30, -20, -10]; unseen -> 0
    assert torch.allclose(after.rank, torch.tensor([30.0, -20.0, 0.0, -10.0]))
    assert sorted(after.kept.tolist()) == [0, 2]
    assert after.store_mask.tolist() == [False, False, True, False]  # W recorded at first visit


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_bad_momentum(bad):
    with pytest.raises(ValueError, match="--dissect-momentum"):
        S.create_strategy("dissect-mome", momentum=bad)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="--selection"):
        S.create_strategy("oracle")


def test_auroc_with_ties_by_hand():
    score = torch.tensor([0.1, 0.4, 0.4, 0.8])
    positive = torch.tensor([False, True, False, True])
    # pairs (pos, neg): (0.4, 0.1) win, (0.4, 0.4) tie, (0.8, 0.1) win, (0.8, 0.4) win -> 3.5 / 4
    assert auroc(score, positive) == pytest.approx(0.875)
    assert math.isnan(auroc(score, torch.zeros(4, dtype=torch.bool)))


def test_audit_by_hand():
    rank = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    kept = torch.tensor([True, True, False, False, True])
    noisy = torch.tensor([0, 1, 0, -1, 1], dtype=torch.int8)
    a = audit(rank, kept, noisy)
    assert a["kept_precision"] == pytest.approx(1 / 3)  # kept & known: 0 (clean), 1, 4 (noisy)
    assert a["clean_recall"] == pytest.approx(1 / 2)  # clean: 0 (kept), 2 (dropped)
    assert a["random_precision"] == pytest.approx(2 / 4)
    assert a["auroc"] == pytest.approx(
        auroc(torch.tensor([4.0, 3.0, 2.0, 0.0]), torch.tensor([True, False, True, False]))
    )
    assert audit(rank, kept, torch.full((5,), -1, dtype=torch.int8)) == {}


def test_noisy_key_list(tmp_path):
    from open_clip_dissect.core.audit import NoisyKeyList
    from open_clip_dissect.core.history import hash_keys

    path = tmp_path / "noisy.txt"
    path.write_text("a/1\nc/3\n\n")
    labels = NoisyKeyList(str(path)).label(hash_keys(["a/1", "b/2", "c/3", "d/4"]))
    assert labels.tolist() == [1, 0, 1, 0] and labels.dtype == torch.int8
