"""The contract every registered strategy keeps, checked through ``Selector.step`` (the one call a
training loop makes): how many it keeps, random tie-breaks, NaN rejected, history stored exactly
where the strategy says, determinism, and a state round trip. A new strategy is checked here by
registering it; nothing else to add."""

import pytest
import torch

from open_clip_dissect.core.selector import Selector
from open_clip_dissect.core.strategies import RUN_EPOCHS, create_strategy, list_strategies, num_kept, strategy_class
from open_clip_dissect.core.types import OracleFeatures

B, D = 16, 8
KEYS = [f"/shard/{i:04d}" for i in range(B)]


def _selector(name, seed=0, ratio=0.5):
    options = {RUN_EPOCHS.name: 4} if RUN_EPOCHS in strategy_class(name).options else {}
    return Selector(create_strategy(name, **options), ratio=ratio, seed=seed)


def _features(seed, equal=False, nan_row=None):
    g = torch.Generator().manual_seed(seed)
    image, text = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    if equal:  # every candidate scores alike
        image, text = torch.ones(B, D), torch.ones(B, D)
    if nan_row is not None:
        image[nan_row] = float("nan")
    oracle = OracleFeatures(torch.randn(B, D, generator=g), torch.randn(B, D, generator=g), torch.tensor(10.0))
    if equal:
        oracle = OracleFeatures(torch.ones(B, D), torch.ones(B, D), torch.tensor(10.0))
    return image, text, torch.tensor(10.0), oracle


def _step(selector, epoch, seed, **kw):
    image, text, scale, oracle = _features(seed, **kw)
    return selector.step(KEYS, image, text, scale, epoch, oracle=oracle)


@pytest.mark.parametrize("name", list_strategies())
def test_keeps_k_distinct_candidates(name):
    selector = _selector(name)
    for epoch in range(3):
        kept = _step(selector, epoch, seed=epoch).kept
        assert len(set(kept.tolist())) == len(kept) and 0 <= int(kept.min()) and int(kept.max()) < B
        if strategy_class(name).variable_kept:
            assert 1 <= len(kept) <= B
        elif strategy_class(name).keeps_all:
            assert len(kept) == B
        else:
            assert len(kept) == num_kept(B, 0.5) == 8


@pytest.mark.parametrize(
    "name", [n for n in list_strategies() if not (strategy_class(n).variable_kept or strategy_class(n).keeps_all)]
)
def test_ties_are_broken_at_random(name):
    kept = {tuple(sorted(_step(_selector(name, seed), 0, 0, equal=True).kept.tolist())) for seed in range(8)}
    assert len(kept) > 1 and kept != {tuple(range(8))}


@pytest.mark.parametrize("name", list_strategies())
def test_a_nan_score_is_rejected_naming_the_sample(name):
    with pytest.raises(FloatingPointError, match=KEYS[5]):
        _step(_selector(name), 0, 0, nan_row=5)


@pytest.mark.parametrize("name", list_strategies())
def test_history_is_stored_exactly_where_the_strategy_says(name):
    selector = _selector(name)
    cls = strategy_class(name)
    for epoch in range(3):
        hashes = torch.tensor([hash(k) for k in KEYS])  # any int64 keys work
        seen_before, stored_before = selector.store.get(hashes)
        image, text, scale, oracle = _features(epoch)
        decision = selector.step(hashes, image, text, scale, epoch, oracle=oracle)
        if not cls.needs_history:
            assert len(selector.store) == 0
            continue
        seen, stored = selector.store.get(hashes)
        if decision.new_history is None:  # stores nothing this batch
            assert torch.equal(seen, seen_before) and torch.equal(stored, stored_before)
            continue
        assert bool(seen.all())
        mask = torch.ones(B, dtype=torch.bool) if decision.store_mask is None else decision.store_mask
        assert torch.equal(stored[mask], decision.new_history.float()[mask])
        old = torch.where(seen_before, stored_before, torch.zeros(B))
        assert torch.equal(stored[~mask], old[~mask])


@pytest.mark.parametrize("name", list_strategies())
def test_same_seed_same_decisions_and_state_round_trip(name):
    a, b = _selector(name, seed=3), _selector(name, seed=3)
    for epoch in range(2):
        assert torch.equal(_step(a, epoch, epoch).kept, _step(b, epoch, epoch).kept)
    a.end_epoch()
    restored = _selector(name, seed=99)
    restored.load_state_dict(a.state_dict())
    for epoch in (2, 3):
        assert torch.equal(_step(a, epoch, epoch).kept, _step(restored, epoch, epoch).kept)


def test_a_new_strategy_needs_only_its_class(monkeypatch):
    """CONTRIBUTING.md's "Adding a strategy": the class alone gives the --selection choice, its flag
    (parsed, validated, passed by name) and the one-call API."""
    from open_clip_dissect.core.strategies import Option, Strategy, registry
    from open_clip_dissect.core.strategies.registry import in_range
    from open_clip_dissect.errors import InputError
    from open_clip_dissect.openclip.launch import params

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after the test

    @registry.register
    class Margin(Strategy):
        name = "margin"
        summary = "the k highest CLIPScores above --margin-floor"
        options = (
            Option(
                "floor", "--margin-floor", float, 10.0, "CLIPScore below which a pair ranks last", in_range(0.0, 100.0)
            ),
        )

        def __init__(self, floor=10.0):
            self.floor = floor

        def rank(self, scores, history, epoch, generator):
            return (scores.curr - self.floor).clamp_min(0)

    args = params.parse_args(["--selection", "margin", "--margin-floor", "20"])
    assert params.strategy_options(args) == {"name": "margin", "floor": 20.0}
    with pytest.raises(InputError, match="--margin-floor"):
        params.parse_args(["--selection", "margin", "--margin-floor", "200"])
    selector = Selector(create_strategy(**params.strategy_options(args)), ratio=0.5)
    assert len(_step(selector, 0, 0).kept) == 8

    class Forgetful(Strategy):  # reads the history but never says what to store
        name = "forgetful"
        needs_history = True

        def rank(self, scores, history, epoch, generator):
            return scores.curr - history.score

    with pytest.raises(TypeError, match="must override decide"):
        registry.register(Forgetful)

    class Blind(Strategy):  # skips the scoring pass, yet ranks by the loss it would measure
        name = "blind"
        needs_scores = False
        needs_loss = True

    with pytest.raises(TypeError, match=r"'blind' sets needs_scores = False but reads .* \(loss\)"):
        registry.register(Blind)
