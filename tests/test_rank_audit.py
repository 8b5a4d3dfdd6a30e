"""The audit covers every rank: the exact AUROC merge."""
import pytest
import torch

from open_clip_dissect.core.audit import audit

WORLD = 3


def _shards(seed, n, noisy_rate):
    """Scores with many ties, labels (-1 unknown, 0 clean, 1 noisy) and kept flags, cut into
    uneven rank shards: rank 1 gets no sample at all, rank 2 no labelled one."""
    g = torch.Generator().manual_seed(seed)
    score = torch.randint(0, 12, (n,), generator=g).float()
    noisy = (torch.rand(n, generator=g) < noisy_rate).to(torch.int8)
    kept = torch.rand(n, generator=g) < 0.5
    cut = [0, n - 20, n - 20, n]
    noisy[cut[2]:] = -1
    noisy[:5] = -1
    return [(score[a:b], kept[a:b], noisy[a:b]) for a, b in zip(cut, cut[1:])], (score, kept, noisy)


def _audit_worker(rank, world, init_file, out_dir):
    import os

    import torch.distributed as dist

    from open_clip_dissect.dist.communicator import Communicator

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = []
        for seed, rate in ((0, 0.3), (1, 0.7)):  # noisy the smaller class, then clean
            shards, _ = _shards(seed, 200, rate)
            results.append(audit(*shards[rank], comm=Communicator(rank, world)))
        torch.save(results, os.path.join(out_dir, f"audit{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_merged_audit_equals_the_audit_of_the_union(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_audit_worker, args=(WORLD, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for case, (seed, rate) in enumerate(((0, 0.3), (1, 0.7))):
        _, (score, kept, noisy) = _shards(seed, 200, rate)
        union = audit(score, kept, noisy)
        # Mann-Whitney by brute force over every (clean, noisy) pair, ties half
        clean, dirty = score[noisy == 0], score[noisy == 1]
        pairs = (clean[:, None] > dirty[None, :]).double() + 0.5 * (clean[:, None] == dirty[None, :]).double()
        assert union["auroc"] == pytest.approx(float(pairs.mean()), abs=1e-12)
        for rank in range(WORLD):
            merged = torch.load(tmp_path / f"audit{rank}.pt")[case]
            assert merged.keys() == union.keys() and merged["labelled"] == float((noisy >= 0).sum())
            for name, value in union.items():
                assert merged[name] == pytest.approx(value, abs=1e-12), (case, rank, name)
