"""The early-learning detectors, the DISSect warm-up gate built on them, ``observe`` and the
epoch signals the Selector sums (pure tensor code, no training)."""

import pytest
import torch

from open_clip_dissect.core import strategies as S
from open_clip_dissect.core.early_learning import EarlyLearningDetector, EpochSignals
from open_clip_dissect.core.history import hash_keys
from open_clip_dissect.core.selector import Selector
from open_clip_dissect.errors import InputError


def _feed(detector, values, field):
    """Feed one value per epoch; return {epoch: line} of the epochs it fired."""
    fired = {}
    for epoch, value in enumerate(values):
        line = detector.update(epoch, EpochSignals(**{field: value}))
        if line:
            fired[epoch] = line
    return fired


# The plain rules, one measurement at a time and armed by any gain on the first measurement.
PLAIN = {"window": 1, "min_gain": 0.0}


def test_spread_detector_fires_once_after_the_peak():
    detector = EarlyLearningDetector("spread", patience=2, **PLAIN)
    fired = _feed(detector, [5.0, 8.0, 11.0, 10.9, 11.5, 11.2, 11.1, 9.0, 8.0], "clipscore_std")
    # 10.9 after 11.0 is one measurement below; 11.5 is a new peak; then two below it.
    assert list(fired) == [6]
    assert fired[6].startswith("early-learning point detected at epoch 4 (CLIPScore std peaked at 11.5000")
    assert (detector.detected_epoch, detector.switch_epoch) == (4, 7)


def test_retrieval_detector_skips_epochs_without_a_measurement():
    detector = EarlyLearningDetector("retrieval", patience=2, **PLAIN)
    fired = _feed(detector, [10.0, None, 30.0, None, 29.0, float("nan"), 28.0, 40.0], "retrieval")
    assert list(fired) == [6] and "retrieval R@sum peaked at 30.0000" in fired[6]
    assert detector.detected_epoch == 2 and detector.switch_epoch == 7


def test_loss_detector_fires_when_improvement_falls_under_the_threshold():
    detector = EarlyLearningDetector("loss", min_improvement=0.05, **PLAIN)
    fired = _feed(detector, [5.5, 4.0, 3.0, 2.9, 1.0], "mean_loss")
    assert list(fired) == [3] and "3.33% better than epoch 2's 3.0000" in fired[3]
    assert detector.switch_epoch == 4


def test_a_dip_at_the_start_is_not_a_peak():
    """Held-out R@sum on real digits fell 12.2, 11.0, 9.8 before it climbed to 49.8: the old
    detector took epoch 0 for the point. Nothing is watched until the signal has gained."""
    rsum = [12.2, 11.0, 9.8, 20.0, 35.0, 49.8, 48.0, 47.0, 45.0]
    unarmed = EarlyLearningDetector("retrieval", patience=2, window=1, min_gain=-1.0)  # the old rule
    assert list(_feed(unarmed, rsum, "retrieval")) == [2] and unarmed.detected_epoch == 0
    detector = EarlyLearningDetector("retrieval", patience=2)  # the defaults: window 2, gain 0.1
    fired = _feed(detector, rsum, "retrieval")
    # trailing means 12.2, 11.6, 10.4, 14.9 (armed: 22% over 12.2), 27.5, 42.4, 48.9, 47.5, 46.0
    assert list(fired) == [8] and detector.detected_epoch == 6
    assert "peaked at 48.9000, mean of the last 2" in fired[8]
    for signal, field in (("spread", "clipscore_std"), ("retrieval", "retrieval")):
        flat = EarlyLearningDetector(signal, patience=1)  # never better than the start: never fires
        assert _feed(flat, [5.0, 4.0, 3.0, 5.5, 5.4, 4.0, 3.0], field) == {} and not flat.armed


def test_one_epochs_swing_does_not_end_the_warmup():
    """A single high evaluation, then two lower, while the signal still climbs: a peak for
    one measurement at a time, not for the trailing mean of two."""
    rsum = [10.0, 20.0, 30.0, 44.0, 36.0, 40.0, 46.0, 50.0, 52.0, 51.0, 50.0]
    single = EarlyLearningDetector("retrieval", patience=2, window=1)
    assert list(_feed(single, rsum, "retrieval")) == [5] and single.detected_epoch == 3
    smoothed = EarlyLearningDetector("retrieval", patience=2)
    assert _feed(smoothed, rsum, "retrieval") == {} and smoothed.best[0] == 9


def test_loss_that_rises_at_the_start_does_not_fire():
    """The old rule fired at epoch 1 (no improvement on epoch 0) before anything was learned."""
    loss = [4.0, 4.1, 4.2, 3.0, 2.0, 1.5, 1.45, 1.44]
    assert list(_feed(EarlyLearningDetector("loss", window=1, min_gain=-1.0), loss, "mean_loss")) == [1]
    detector = EarlyLearningDetector("loss")
    fired = _feed(detector, loss, "mean_loss")
    # trailing means 4.0, 4.05, 4.15, 3.6 (10% under 4.0: not more), 2.5 (armed), 1.75, 1.475, 1.445
    assert list(fired) == [7] and detector.detected_epoch == 7
    assert "mean of the last 2" in fired[7] and "2.03% better than epoch 6's 1.4750" in fired[7]


def test_a_state_saved_before_the_arming_rule_resumes_armed():
    old = {"signal": "spread", "best": [3, 8.0], "previous": None, "below": 1}
    old.update(detected_epoch=None, fired_epoch=None)
    detector = EarlyLearningDetector("spread", patience=2, window=1)
    detector.load_state_dict(old)
    assert detector.armed and list(_feed_from(detector, 4, [7.0], "clipscore_std")) == [4]


def _feed_from(detector, start, values, field):
    fired = {}
    for epoch, value in enumerate(values, start):
        line = detector.update(epoch, EpochSignals(**{field: value}))
        if line:
            fired[epoch] = line
    return fired


@pytest.mark.parametrize(
    "signal,field,values",
    [
        ("spread", "clipscore_std", [1.0, 3.0, 2.0, 4.0, 3.5, 3.4, 3.3]),
        ("loss", "mean_loss", [5.0, 3.0, 2.0, 1.95, 1.9]),
        ("retrieval", "retrieval", [1.0, 3.0, 2.0, 4.0, 3.5, 3.4, 3.3]),
    ],
)
def test_detector_state_round_trip_detects_nothing_twice(signal, field, values):
    straight = EarlyLearningDetector(signal)
    expected = _feed(straight, values, field)
    assert len(expected) == 1
    for cut in range(1, len(values)):
        first = EarlyLearningDetector(signal)
        fired = _feed(first, values[:cut], field)
        resumed = EarlyLearningDetector(signal)
        resumed.load_state_dict(first.state_dict())
        for epoch in range(cut, len(values)):
            line = resumed.update(epoch, EpochSignals(**{field: values[epoch]}))
            if line:
                fired[epoch] = line
        assert fired == expected and resumed.switch_epoch == straight.switch_epoch
    with pytest.raises(ValueError, match="watches"):
        EarlyLearningDetector("loss" if signal != "loss" else "spread").load_state_dict(straight.state_dict())


# ----------------------------------------------------------------------------- the Selector

B = 16
KEYS = hash_keys([f"s{i}" for i in range(B)])


def _scores(epoch):
    """CLIPScores whose spread grows until epoch 2 and shrinks until epoch 4; in epoch 5 sample
    i's score falls by 1.5 i, so that delta = hist - curr ranks the high indices first."""
    spread = [1.0, 2.0, 4.0, 3.0, 2.0, 1.0][epoch]
    base = torch.linspace(-1, 1, B) * spread + 50.0
    if epoch == 5:
        base = base - 1.5 * torch.arange(B, dtype=torch.float32)
    return S.BatchScores(base)


def _run(selector, epochs, retrieval=None):
    decisions, lines = [], {}
    for epoch in epochs:
        decisions.append(selector.decide(KEYS, _scores(epoch), epoch))
        if retrieval is not None:
            selector.set_retrieval(retrieval[epoch])
        line = selector.end_epoch()
        if line:
            lines[epoch] = line
    return decisions, lines


def test_selector_sums_the_epoch_signals_over_its_batches():
    selector = Selector(S.create_strategy("random"), ratio=0.5)
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0])
    loss = torch.tensor([0.5, 1.5, 1.0])
    selector.decide(KEYS[:3], S.BatchScores(a, loss=loss), 0)
    selector.decide(KEYS[3:5], S.BatchScores(b), 0)
    selector.set_retrieval(42.0)
    selector.end_epoch()
    signals = selector.last_signals
    both = torch.cat([a, b]).double()
    assert signals.candidates == 5
    assert signals.clipscore_mean == pytest.approx(float(both.mean()))
    assert signals.clipscore_std == pytest.approx(float(both.std(unbiased=False)))
    assert signals.mean_loss == pytest.approx(1.0) and signals.retrieval == 42.0
    selector.decide(KEYS[:3], S.BatchScores(a), 1)
    selector.end_epoch()  # a new epoch starts from zero, with nothing carried over
    assert selector.last_signals.candidates == 3 and selector.last_signals.retrieval is None
    assert selector.last_signals.mean_loss is None


@pytest.mark.parametrize("name,flag", [("dissect-warmup", "warmup_epochs"), ("dissect-mome", "warmup_epochs")])
def test_auto_warmup_selects_at_random_until_the_spread_peaks_then_by_delta(name, flag):
    selector = Selector(
        S.create_strategy(name, **{flag: "auto", "auto_signal": "spread", "auto_patience": 2, "auto_window": 1}),
        ratio=0.25,
        seed=1,
    )
    decisions, lines = _run(selector, range(6))
    # The spread peaks at epoch 2 and is below it at the ends of epochs 3 and 4: selection from 5.
    assert list(lines) == [4]
    assert lines[4].startswith("early-learning point detected at epoch 2 (CLIPScore std peaked at")
    assert lines[4].endswith("selection by delta from epoch 5")
    assert selector.strategy.status() == {"selection_from_epoch": 5, "early_learning_point": 2}
    # Warm-up epochs keep a random k (not the top of any fixed order) ...
    assert len({tuple(sorted(d.kept.tolist())) for d in decisions[:5]}) > 1
    # ... epoch 5 keeps the samples whose score fell most below their history: the high indices.
    assert sorted(decisions[5].kept.tolist()) == list(range(12, 16))
    if name == "dissect-mome":  # the moving average accumulated from the first epoch
        assert bool(decisions[1].hist.isfinite().all())
        # the records show delta as it would rank during the warm-up
        assert torch.allclose(decisions[3].rank, decisions[3].hist - _scores(3).curr)


def test_auto_warmup_state_travels_with_the_selector_state():
    straight = Selector(
        S.create_strategy("dissect-warmup", warmup_epochs="auto", auto_signal="spread", auto_window=1),
        ratio=0.25,
        seed=1,
    )
    expected, expected_lines = _run(straight, range(6))
    for cut in (3, 5):  # before the detection, after it
        first = Selector(
            S.create_strategy("dissect-warmup", warmup_epochs="auto", auto_signal="spread", auto_window=1),
            ratio=0.25,
            seed=1,
        )
        _, lines = _run(first, range(cut))
        resumed = Selector(
            S.create_strategy("dissect-warmup", warmup_epochs="auto", auto_signal="spread", auto_window=1),
            ratio=0.25,
            seed=7,
        )
        resumed.load_state_dict(first.state_dict())
        decisions, more = _run(resumed, range(cut, 6))
        assert {**lines, **more} == expected_lines  # detected once, whichever side of the cut
        for got, want in zip(decisions, expected[cut:]):
            assert torch.equal(got.kept, want.kept)


def test_retrieval_signal_reads_the_score_handed_to_the_selector():
    selector = Selector(
        S.create_strategy(
            "dissect-mome", warmup_epochs="auto", auto_signal="retrieval", auto_patience=1, auto_window=1
        ),
        ratio=0.25,
    )
    _, lines = _run(selector, range(4), retrieval=[10.0, 20.0, 15.0, 30.0])
    assert list(lines) == [2] and "retrieval R@sum peaked at 20.0000" in lines[2]


def test_loss_signal_makes_the_strategy_read_losses():
    assert S.create_strategy("dissect-warmup", warmup_epochs="auto", auto_signal="loss").needs_loss
    assert not S.create_strategy("dissect-warmup", warmup_epochs="auto").needs_loss
    assert not S.create_strategy("dissect-mome").needs_loss


def test_warmup_options_are_checked():
    with pytest.raises(InputError, match="--dissect-warmup-epochs: must be a number of epochs >= 0 or 'auto'"):
        S.create_strategy("dissect-warmup", warmup_epochs="soon")
    with pytest.raises(InputError, match="--dissect-auto-signal: must be one of retrieval, loss, spread"):
        S.create_strategy("dissect-mome", warmup_epochs="auto", auto_signal="gap")
    from open_clip_dissect.core.strategies.dissect import epochs_or_auto

    assert epochs_or_auto("AUTO") == "auto" and epochs_or_auto("3") == 3
    with pytest.raises(ValueError):
        epochs_or_auto("three")


def test_fixed_warmups_behave_as_before():
    """dissect-mome without a warm-up ranks by delta from the start; dissect-warmup's fixed
    warm-up ends after its epochs (no detector)."""
    selector = Selector(S.create_strategy("dissect-mome"), ratio=0.25, seed=1)
    decisions, lines = _run(selector, range(6))
    assert not lines and selector.strategy.status() == {"selection_from_epoch": 0}
    assert sorted(decisions[5].kept.tolist()) == list(range(12, 16))
    fixed = S.create_strategy("dissect-warmup", warmup_epochs=2)
    assert fixed.gate.in_warmup(1) and not fixed.gate.in_warmup(2) and fixed.state_dict() == {}


def test_observe_trains_on_every_candidate_whatever_the_ratio():
    selector = Selector(S.create_strategy("observe"), ratio=0.3)
    decision = selector.decide(KEYS, _scores(0), 0)
    assert sorted(decision.kept.tolist()) == list(range(B)) and selector.num_kept(B) == B
