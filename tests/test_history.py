"""HistoryStore: vectorised get/update by key, first-sight insertion, merges, state round trip."""

import random

import pytest
import torch

from open_clip_dissect.core.history import HistoryStore, hash_keys


def test_hash_is_stable_and_width_independent():
    a = hash_keys(["abc", "a much longer key/00000001", "é"])
    b = hash_keys(["é", "abc"])
    assert a[0] == b[1] and a[2] == b[0]
    # FNV-1a 64 of "a" (reference value of the algorithm)
    assert int(hash_keys(["a"])[0]) & 0xFFFFFFFFFFFFFFFF == 0xAF63DC4C8601EC8C
    assert len(set(hash_keys([str(i) for i in range(10000)]).tolist())) == 10000


class DictHistory:
    """The obvious per-sample reference implementation."""

    def __init__(self):
        self.d = {}

    def update(self, keys, scores, epoch, mask):
        for key, s, m in zip(keys, scores, mask):
            if key in self.d:
                old = self.d[key]
                self.d[key] = (s if m else old[0], epoch, min(old[2] + 1, 32767))
            else:
                self.d[key] = (s if m else 0.0, epoch, 1)


def test_matches_a_dict_over_a_random_stream():
    rng = random.Random(0)
    store, ref = HistoryStore(), DictHistory()
    universe = [f"shard-{i % 7}.tar/{i:06d}" for i in range(3000)]
    for step in range(120):
        keys = list(dict.fromkeys(rng.choice(universe) for _ in range(64)))  # unique per batch
        scores = [rng.uniform(0, 100) for _ in keys]
        mask = [rng.random() < 0.8 for _ in keys]
        hashes = hash_keys(keys)
        seen, score, epoch, visits = store.get(hashes, with_visits=True)
        for j, key in enumerate(keys):
            assert bool(seen[j]) == (key in ref.d)
            if key in ref.d:
                assert score[j].item() == pytest.approx(ref.d[key][0], rel=1e-6)
                assert (int(epoch[j]), int(visits[j])) == ref.d[key][1:]
        store.update(hashes, torch.tensor(scores), step // 10, torch.tensor(mask), batch_size=64)
        ref.update(keys, scores, step // 10, mask)
    assert len(store) == len(ref.d)
    assert store.nbytes == 16 * len(store)


def test_duplicate_keys_in_a_batch_count_once_first_row_wins():
    store = HistoryStore()
    h = hash_keys(["a", "b", "a"])
    store.update(h, torch.tensor([1.0, 2.0, 3.0]), epoch=0)
    seen, score, _, visits = store.get(hash_keys(["a", "b"]), with_visits=True)
    assert seen.all() and score.tolist() == [1.0, 2.0] and visits.tolist() == [1, 1]


def test_state_round_trip_and_validation():
    store = HistoryStore()
    keys = [f"k{i}" for i in range(500)]
    store.update(hash_keys(keys), torch.arange(500.0), epoch=2)
    state = store.state_dict()
    other = HistoryStore()
    other.load_state_dict(state)
    got = other.get(hash_keys(keys), with_visits=True)
    want = store.get(hash_keys(keys), with_visits=True)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    with pytest.raises(KeyError):
        other.load_state_dict({"hash": state["hash"]})
    with pytest.raises(ValueError, match="sorted"):
        other.load_state_dict({**state, "hash": state["hash"].flip(0)})


@pytest.mark.cuda  # skipped without CUDA (conftest); make gpu-check runs it
def test_cuda_store_matches_cpu_store():
    keys = [f"k{i}" for i in range(1000)]
    cpu, gpu = HistoryStore("cpu"), HistoryStore("cuda")
    for store in (cpu, gpu):
        store.update(hash_keys(keys[:600]), torch.arange(600.0), epoch=0)
        store.update(hash_keys(keys[300:]), torch.arange(700.0), epoch=1)
    assert all(
        torch.equal(a, b.cpu())
        for a, b in zip(cpu.get(hash_keys(keys), with_visits=True), gpu.get(hash_keys(keys), with_visits=True))
    )


def test_repeated_and_neighbouring_keys_in_a_batch_match_a_dict():
    """Batches that repeat keys (first row wins) next to keys that sort beside them: the update
    writes every position once, whatever order the rows are applied in."""
    rng = random.Random(2)
    store, ref = HistoryStore(), DictHistory()
    universe = [f"k{i:04d}" for i in range(300)]
    for step in range(60):
        keys = [rng.choice(universe) for _ in range(48)]  # repeats within the batch
        scores = [rng.uniform(0, 100) for _ in keys]
        mask = [rng.random() < 0.7 for _ in keys]
        store.update(hash_keys(keys), torch.tensor(scores), step // 7, torch.tensor(mask), batch_size=48)
        first = {}
        for j, key in enumerate(keys):
            first.setdefault(key, j)
        rows = sorted(first.values())
        ref.update([keys[j] for j in rows], [scores[j] for j in rows], step // 7, [mask[j] for j in rows])
    hashes = hash_keys(universe)
    seen, score, epoch, visits = store.get(hashes, with_visits=True)
    for j, key in enumerate(universe):
        assert bool(seen[j]) == (key in ref.d)
        if key in ref.d:
            assert score[j].item() == pytest.approx(ref.d[key][0], rel=1e-6)
            assert (int(epoch[j]), int(visits[j])) == ref.d[key][1:]
