"""The audit and the selection records cover every rank: the exact AUROC merge, the per-rank record
files and their readers, and a 2-process run whose audit is that of the union of its records."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import read_jsonl, start_ranks

from open_clip_dissect.core.audit import audit
from open_clip_dissect.errors import InputError
from open_clip_dissect.offline.coreset import forgetting_scores
from open_clip_dissect.openclip.training import selection_record as record_lib

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast

WORLD = 3


def _shards(seed, n, noisy_rate):
    """Scores with many ties, labels (-1 unknown, 0 clean, 1 noisy) and kept flags, cut into
    uneven rank shards: rank 1 gets no sample at all, rank 2 no labelled one."""
    g = torch.Generator().manual_seed(seed)
    score = torch.randint(0, 12, (n,), generator=g).float()
    noisy = (torch.rand(n, generator=g) < noisy_rate).to(torch.int8)
    kept = torch.rand(n, generator=g) < 0.5
    cut = [0, n - 20, n - 20, n]
    noisy[cut[2] :] = -1
    noisy[:5] = -1
    return [(score[a:b], kept[a:b], noisy[a:b]) for a, b in zip(cut, cut[1:])], (score, kept, noisy)


def _audit_worker(rank, world, init_file, out_dir):
    import os

    import torch.distributed as dist

    from open_clip_dissect.distributed.communicator import Communicator

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
    start_ranks(_audit_worker, (WORLD, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD)
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


def _columns(curr, noisy):
    curr = torch.as_tensor(curr, dtype=torch.float32)
    return {
        "curr": curr,
        "hist": curr,
        "delta": curr,
        "kept": torch.ones(len(curr), dtype=torch.bool),
        "noisy": torch.as_tensor(noisy, dtype=torch.int8),
    }


def test_record_files_per_rank_and_their_readers(tmp_path):
    directory = str(tmp_path)
    # epoch 0 on 2 ranks (rank 1 knows no label), epoch 1 in the single-file layout of before
    record_lib.write_epoch(directory, 0, ["a", "b"], _columns([10.0, 1.0], [0, 1]), rank=0, world_size=2)
    record_lib.write_epoch(directory, 0, ["c", "d"], _columns([9.0, 2.0], [-1, -1]), rank=1, world_size=2)
    curr = [1.0, 10.0, 2.0, 9.0]
    pd.DataFrame(
        {"key": ["a", "b", "c", "d"], "epoch": 1, "curr": curr, "hist": curr, "delta": curr, "kept": True}
    ).to_parquet(tmp_path / "epoch_1.parquet")
    (tmp_path / "epoch_2.rank0-of-2.tmp-123.parquet").write_bytes(b"a write in progress")
    epochs = record_lib.recorded_epochs(directory)
    assert [(e, [f.split("/")[-1] for f in files]) for e, files in epochs] == [
        (0, ["epoch_0.rank0-of-2.parquet", "epoch_0.rank1-of-2.parquet"]),
        (1, ["epoch_1.parquet"]),
    ]
    frame = record_lib.read_epoch(epochs[0][1])
    assert frame["key"].tolist() == ["a", "b", "c", "d"]
    assert frame["noisy"].tolist()[:2] == [False, True] and frame["noisy"].isna().tolist()[2:] == [True, True]
    # medians 5.5 then 5.5: a and c are learned in epoch 0 and forgotten in epoch 1
    assert forgetting_scores(directory).set_index("key")["forgetting"].to_dict() == {"a": 1, "b": 0, "c": 1, "d": 0}
    assert record_lib.plot_distributions(directory).endswith("distributions.png")

    # An epoch rewritten by another number of ranks, or over the old layout, keeps only the new files.
    record_lib.write_epoch(directory, 0, ["a", "b", "c", "d"], _columns([1, 2, 3, 4], [0, 0, 1, 1]))
    record_lib.write_epoch(directory, 1, ["a"], _columns([1], [0]))
    assert [[f.split("/")[-1] for f in files] for _, files in record_lib.recorded_epochs(directory)] == [
        ["epoch_0.rank0-of-1.parquet"],
        ["epoch_1.rank0-of-1.parquet"],
    ]
    record_lib.write_epoch(directory, 1, ["a"], _columns([1], [0]), rank=0, world_size=2)
    with pytest.raises(InputError, match="epoch 1 .* incomplete"):  # rank 1 of 2 has not written epoch 1
        record_lib.plot_distributions(directory)
    with pytest.raises(InputError, match="no epoch_"):
        forgetting_scores(str(tmp_path / "empty"))


def test_two_ranks_audit_equals_the_audit_of_their_records(two_rank_dissect_run):
    """The audit logged by 2 ranks (dissect-mome, 2 epochs, through torchrun) is the audit of the
    union of their record files."""
    records = two_rank_dissect_run.parent / "records"
    summaries = read_jsonl(two_rank_dissect_run / "selection.jsonl")
    epochs = record_lib.recorded_epochs(str(records))
    assert [e for e, _ in epochs] == [0, 1] and all(len(files) == 2 for _, files in epochs)
    for summary, (epoch, files) in zip(summaries, epochs):
        ranks = [pd.read_parquet(f) for f in files]
        assert len(ranks[0]) > 50 and len(ranks[1]) > 50 and not set(ranks[0].key) & set(ranks[1].key)
        union = record_lib.read_epoch(files)
        assert summary["candidates"] == len(union) == 256 and summary["kept"] == int(union["kept"].sum())
        expected = audit(
            torch.tensor(union["delta"].to_numpy()),
            torch.tensor(union["kept"].to_numpy()),
            torch.tensor(union["noisy"].astype("Int8").fillna(-1).to_numpy(dtype=np.int8)),
        )
        assert expected["labelled"] == 256
        for name, value in expected.items():
            assert summary[f"audit_{name}"] == pytest.approx(value, abs=1e-9), (epoch, name)
    # Epoch 0 of dissect-mome ranks every sample 0 (no history); epoch 1 ranks by delta, and rank 0's
    # samples alone (what the audit covered before) give another AUROC.
    assert summaries[0]["audit_auroc"] == 0.5 and not math.isclose(summaries[1]["audit_auroc"], 0.5)
    rank0 = audit(
        torch.tensor(ranks[0]["delta"].to_numpy()),
        torch.tensor(ranks[0]["kept"].to_numpy()),
        torch.tensor(ranks[0]["noisy"].astype("Int8").to_numpy(dtype=np.int8)),
    )
    assert not math.isclose(rank0["auroc"], summaries[1]["audit_auroc"])
    assert (records / "distributions.png").exists()
    assert len(forgetting_scores(str(records))) == 256  # every key, from both ranks' files
