"""The GPU path on a machine without a GPU (``fake_cuda.FakeCuda``): the scoring pass, every
strategy's decision through ``Selector.step``, and a CUDA history store, with tensors that only
claim to be on CUDA. No tensor lands on the wrong device, and the host syncs are counted: one a
step (the decision's single device-to-host read), plus the count of the kept samples for the two
strategies that keep a random number (InfoBatch, SCAN); none inside the per-sample path."""

import pytest
import torch
from fake_cuda import FakeCuda

from open_clip_dissect.core.history import HistoryStore, _merge_sorted, hash_keys
from open_clip_dissect.core.selector import Selector
from open_clip_dissect.core.strategies import BatchScores, History, create_strategy, list_strategies, strategy_class
from open_clip_dissect.core.types import OracleFeatures

B, D = 16, 8
KEYS = [f"/shard/{i:04d}" for i in range(B)]
# Options that walk each strategy through all its phases within EPOCHS epochs.
OPTIONS = {
    "dissect-warmup": {"warmup_epochs": 1},
    "dissect-mome": {"warmup_epochs": 1},
    "scan": {"warmup_epochs": 1},
    "infobatch": {"epochs": 4},
}
EPOCHS = 4
# The syncs a step may make: the decision's one read; strategies that keep a random number of
# samples count them (nonzero), since the loader needs that number on the host anyway.
ALLOWED_EXTRA = {"infobatch": ["nonzero"], "scan": ["nonzero"]}


def _inputs():
    image, text = torch.randn(B, D, device="cuda"), torch.randn(B, D, device="cuda")
    scale = torch.full((), 10.0, device="cuda")
    oracle = OracleFeatures(torch.randn(B, D, device="cuda"), torch.randn(B, D, device="cuda"), scale)
    return image, text, scale, oracle


def test_the_scoring_pass_measures_on_the_gpu_without_a_sync():
    with FakeCuda() as gpu:
        image, text, scale, _ = _inputs()
        mark = gpu.mark()
        scores = BatchScores.from_features(image, text, scale, gradient=True)
        assert gpu.since(mark) == []
    assert set(scores.fields()) == {"curr", "loss", "loss_directions", "gradient"}
    assert all(v.device.type == "cuda" for v in scores.fields().values())


@pytest.mark.parametrize("name", list_strategies())
def test_a_selection_step_reads_the_gpu_once(name):
    selector = Selector(create_strategy(name, **OPTIONS.get(name, {})), ratio=0.5, seed=0)
    hashes = hash_keys(KEYS)
    steps = []
    with FakeCuda() as gpu:
        for epoch in range(EPOCHS):
            for step in range(2):
                image, text, scale, oracle = _inputs()
                mark = gpu.mark()
                decision = selector.step(hashes, image, text, scale, epoch, oracle=oracle)
                if step:  # the first step of an epoch also closes the last one (one read a epoch)
                    steps.append(gpu.since(mark))
                for field in ("kept", "rank", "hist", "new_history", "store_mask", "weights"):
                    value = getattr(decision, field)
                    assert value is None or value.device.type == "cuda", (field, value.device)
    allowed = ["d2h"] + ALLOWED_EXTRA.get(name, [])
    for syncs in steps:
        assert syncs.count("d2h") == 1 and len(syncs) <= len(allowed) and set(syncs) <= set(allowed), syncs
    assert len(selector.store) == (B if strategy_class(name).needs_history else 0)  # the real CPU store


def test_a_step_without_a_scoring_pass_reads_the_gpu_once():
    """random without --selection-record: NaN CLIPScores made on the GPU, one read a step."""
    selector = Selector(create_strategy("random"), ratio=0.5, seed=0)
    hashes = hash_keys(KEYS)
    with FakeCuda() as gpu:
        selector.decide(hashes, BatchScores.unmeasured(B, "cuda"), 0)  # the epoch's first step
        mark = gpu.mark()
        decision = selector.decide(hashes, BatchScores.unmeasured(B, "cuda"), 0)
        assert gpu.since(mark) == ["d2h"] and decision.kept.device.type == "cuda"
    assert len(decision.kept) == B // 2


def test_every_strategy_decides_on_the_gpu_without_a_sync():
    """The strategies alone (the per-sample path), on a global-scope-sized batch."""
    for name in list_strategies():
        strategy = create_strategy(name, **OPTIONS.get(name, {}))
        with FakeCuda() as gpu:
            image, text, scale, oracle = _inputs()
            scores = BatchScores.from_features(image, text, scale, gradient=True)
            oracle_scores = BatchScores.from_features(oracle.image, oracle.text, scale)
            scores.oracle, scores.oracle_loss = oracle_scores.curr, oracle_scores.loss
            history = History(torch.rand(B, device="cuda"), torch.rand(B, device="cuda") > 0.5)
            for epoch in range(EPOCHS):
                mark = gpu.mark()
                decision = strategy.decide(scores, history, B // 2, epoch, torch.Generator().manual_seed(0))
                assert [s for s in gpu.since(mark) if s not in ALLOWED_EXTRA.get(name, [])] == [], (name, epoch)
                assert decision.kept.device.type == "cuda" and decision.rank.device.type == "cuda"


def test_a_cuda_history_store_answers_without_a_sync_and_updates_with_one():
    hashes = hash_keys(KEYS)
    with FakeCuda() as gpu:
        store = HistoryStore("cuda")
        old = hash_keys([f"/old/{i}" for i in range(40)]).sort().values
        store.load_state_dict(
            {
                "hash": old,
                "score": torch.zeros(40),
                "epoch": torch.zeros(40, dtype=torch.int16),
                "visits": torch.zeros(40, dtype=torch.int16),
            }
        )
        for epoch in range(2):
            mark = gpu.mark()
            seen, score, last, visits = store.get(hashes, with_visits=True)
            assert gpu.since(mark) == []
            assert all(t.device.type == "cuda" for t in (seen, score, last, visits))
            mark = gpu.mark()
            store.update(hashes, torch.rand(B, device="cuda"), epoch, torch.rand(B, device="cuda") > 0.5)
            assert gpu.since(mark) == ["item"]  # how many keys are new: the size of the insertion
        a = {k: v.to("cuda") for k, v in store.state_dict().items()}
        b = {
            "hash": torch.zeros(5, dtype=torch.int64, device="cuda"),
            "score": torch.zeros(5, device="cuda"),
            "epoch": torch.zeros(5, dtype=torch.int16, device="cuda"),
            "visits": torch.zeros(5, dtype=torch.int16, device="cuda"),
        }
        mark = gpu.mark()
        merged = _merge_sorted(a, b)
        assert gpu.since(mark) == [] and len(merged["hash"]) == 45 and merged["score"].device.type == "cuda"
