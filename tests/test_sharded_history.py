"""ShardedHistoryStore with 2 gloo processes on CPU: equal to the single-process store for the
same stream of updates; per-rank state files reload on 1 and 3 ranks with equal per-key state."""

import os
import pathlib
import random

import pytest
import torch
import torch.distributed as dist
from conftest import built_once, start_ranks

from open_clip_dissect.core.history import HistoryStore, hash_keys
from open_clip_dissect.distributed.communicator import Communicator
from open_clip_dissect.distributed.sharded_history import ShardedHistoryStore, rank_file, saved_rank_files
from open_clip_dissect.errors import InputError

UNIVERSE = [f"/data/{i % 5:05d}.tar/{i:07d}" for i in range(2000)]
STEPS = 25


def _stream(world):
    """The same stream on every process: per step, one (keys, scores, mask) batch per rank."""
    rng = random.Random(1)
    for step in range(STEPS):
        batches = []
        for rank in range(world):
            size = 48 + 16 * rank  # unequal sizes exercise the padding
            keys = list(dict.fromkeys(rng.choice(UNIVERSE) for _ in range(size)))
            batches.append(
                (
                    keys,
                    torch.tensor([rng.uniform(0, 100) for _ in keys]),
                    torch.tensor([rng.random() < 0.9 for _ in keys]),
                )
            )
        yield step, batches


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        store = ShardedHistoryStore(comm=Communicator(rank, world))
        gets = []
        for step, batches in _stream(world):
            keys, scores, mask = batches[rank]
            # every third step an update without a get first: it routes the keys itself
            gets.append(store.get(hash_keys(keys)) if step % 3 != 2 else None)
            store.update(hash_keys(keys), scores, step // 5, mask)
        torch.save({"gets": gets, "store": store.state_dict()}, rank_file(os.path.join(out_dir, "state"), rank, world))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="session")
def two_rank_run(tmp_path_factory):
    """The two ranks' saved stores, once, whichever test worker asks first."""

    def build(out):
        os.makedirs(out)
        start_ranks(_worker, (2, os.path.join(out, "init"), out), nprocs=2)
        return out

    return pathlib.Path(built_once(tmp_path_factory, "sharded-history", build))


def _reference():
    store, gets = HistoryStore(), []
    for step, batches in _stream(2):
        gets.append([store.get(hash_keys(keys)) for keys, _, _ in batches])
        keys = [k for b in batches for k in b[0]]
        store.update(hash_keys(keys), torch.cat([b[1] for b in batches]), step // 5, torch.cat([b[2] for b in batches]))
    return store, gets


def test_sharded_store_equals_single_process_store(two_rank_run):
    reference, ref_gets = _reference()
    files = saved_rank_files(str(two_rank_run / "state"))
    assert len(files) == 2
    saved = [torch.load(f, weights_only=True) for f in files]
    for rank in range(2):
        for step in range(STEPS):
            got, want = saved[rank]["gets"][step], ref_gets[step][rank]
            if got is None:
                continue
            assert all(torch.equal(a, b) for a, b in zip(got, want)), (rank, step)
    sizes = [len(s["store"]["hash"]) for s in saved]
    assert sum(sizes) == len(reference) and min(sizes) > 0.4 * len(reference)  # memory is split
    for rank, s in enumerate(saved):  # each rank holds only the keys it owns
        assert bool((torch.remainder(s["store"]["hash"], 2) == rank).all())


@pytest.mark.parametrize("world", [1, 3])
def test_elastic_resume_keeps_every_key(two_rank_run, world):
    reference, _ = _reference()
    files = saved_rank_files(str(two_rank_run / "state"))
    stores = [ShardedHistoryStore(comm=Communicator(r, world)) for r in range(world)]
    states = [torch.load(f, weights_only=True)["store"] for f in files]
    for store in stores:
        store.load_rank_states(states)
    assert sum(len(s) for s in stores) == len(reference)
    hashes = hash_keys(UNIVERSE)
    want = reference.get(hashes, with_visits=True)
    owner = torch.remainder(hashes, world)
    for r, store in enumerate(stores):
        mine = owner == r
        got = store.local.get(hashes[mine], with_visits=True)
        assert all(torch.equal(g, w[mine]) for g, w in zip(got, want))


def test_missing_rank_file_is_named(two_rank_run, tmp_path):
    files = saved_rank_files(str(two_rank_run / "state"))
    import shutil

    shutil.copy(files[0], tmp_path / os.path.basename(files[0]))
    with pytest.raises(InputError, match=r"rank files \[1\] of 2 are missing"):
        saved_rank_files(str(tmp_path / "state"))
