"""Two CPU processes (gloo): DDP on CPU, sharded history, elastic resume. The uninterrupted run goes
through torchrun itself; the others start their ranks as torchrun does, forked (``run_ranks``)."""

import os

import pytest
import torch
from conftest import TINY_TRAIN_FLAGS, read_jsonl, run_ranks, start_ranks, two_rank_flags

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast


def ranks(nproc, args, env=None, check=True):
    """``torchrun --nproc_per_node nproc -m open_clip_dissect.main args``, the ranks forked."""
    result = run_ranks(nproc, "open_clip_dissect.main", args, env=env)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_a_killed_rank_resumes_exactly(two_rank_dissect_run, two_rank_data, tmp_path):
    """Rank 1 is killed (SIGKILL) in the middle of epoch 2; torchrun ends rank 0. The job
    resumed with --resume latest ends with both ranks' selection state and the weights of the
    uninterrupted run."""
    flags = [
        *two_rank_flags(two_rank_data, tmp_path),
        "--name",
        "killed",
        "--epochs",
        "2",
        "--save-most-recent",
        "--delete-previous-checkpoint",
    ]
    killed = ranks(2, flags, env={"OPEN_CLIP_DISSECT_KILL_AT": "train:1:2@1"}, check=False)
    assert killed.returncode != 0  # (rank 1's SIGKILL, or rank 0's error if it came first)
    ranks(2, [*flags, "--resume", "latest"])
    for rank in range(2):
        name = f"epoch_2.dissect-state.rank{rank}-of-2"
        want = torch.load(two_rank_dissect_run / "checkpoints" / name, weights_only=True)
        got = torch.load(tmp_path / "killed" / "checkpoints" / name, weights_only=True)
        assert all(torch.equal(want["store"][k], got["store"][k]) for k in want["store"])
        assert torch.equal(want["generator"], got["generator"])
    a = torch.load(two_rank_dissect_run / "checkpoints" / "epoch_2.pt", map_location="cpu")["state_dict"]
    b = torch.load(tmp_path / "killed" / "checkpoints" / "epoch_2.pt", map_location="cpu")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_dissect_then_resume_on_one(two_rank_dissect_run, two_rank_data, tmp_path):
    flags = two_rank_flags(two_rank_data, tmp_path)
    run = two_rank_dissect_run
    with open(run / "out.log") as f:
        log = f.read()
    assert "total 2" in log  # OpenCLIP's "Running in distributed mode ... total 2"
    assert [s["epoch"] for s in read_jsonl(run / "selection.jsonl")] == [1, 2]
    files = [run / "checkpoints" / f"epoch_2.dissect-state.rank{r}-of-2" for r in range(2)]
    stores = [torch.load(f, weights_only=True)["store"] for f in files]
    for rank, store in enumerate(stores):  # each rank keeps only the keys it owns
        assert len(store["hash"]) > 75 and bool((torch.remainder(store["hash"], 2) == rank).all())
    assert sum(len(s["hash"]) for s in stores) == 256  # every sample, once

    # The 2-rank checkpoint resumed by a single process (elastic): the whole history comes back.
    single = [a for a in flags]
    from conftest import run_module

    result = run_module(
        "open_clip_dissect.main",
        [*single, "--name", "one", "--epochs", "3", "--resume", str(run / "checkpoints" / "epoch_2.pt")],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "one" / "out.log") as f:
        log = f.read()
    assert "restored from 2 rank file(s)" in log and "(256 samples in this rank's history)" in log


def test_global_scope_gives_every_rank_the_same_batch_size(tiny_data, tmp_path):
    flags = [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        tiny_data.train,
        "--dataset-type",
        "webdataset",
        "--workers",
        "1",
        "--logs",
        str(tmp_path),
        "--name",
        "global",
        "--epochs",
        "1",
        "--selection",
        "dissect-mome",
        "--selection-scope",
        "global",
        "--ratio",
        "0.25",
        "--train-num-samples",
        "256",
    ]
    ranks(2, flags)  # ClipLoss's all-gather aborts on unequal per-rank batch sizes
    summary = read_jsonl(tmp_path / "global" / "selection.jsonl")[0]
    assert summary["candidates"] == 256 and summary["kept"] == 4 * 8 * 2  # k = 8 per rank and step
    with open(tmp_path / "global" / "out.log") as f:
        assert "[64/64 (100%)]" in f.read()  # upstream's count: 4 steps x 8 samples x 2 ranks


def test_rebalance_deals_k_samples_to_every_rank(tmp_path):

    start_ranks(_rebalance_worker, (2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # rank 0 kept its candidates 0, 2, 3; rank 1 kept 5: rank 0 trains on 0, 2 and sends only
    # its surplus 3 to rank 1, which lacks one
    assert got[0].tolist() == [0, 2] and got[1].tolist() == [5, 3]


def _rebalance_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    from open_clip_dissect.distributed.communicator import Communicator
    from open_clip_dissect.distributed.exchange import RankExchange

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        images = torch.arange(4).float()[:, None] + 4 * rank  # candidate ids 0-3 and 4-7
        texts = images.long()
        kept = torch.tensor([0, 2, 3]) if rank == 0 else torch.tensor([1])
        mine, _ = RankExchange(Communicator(rank, world)).rebalance(images, texts, kept, k=2)
        torch.save(mine[:, 0].long(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_infobatch_pads_unequal_kept_counts_across_ranks(two_rank_data, tmp_path):
    """Each rank prunes its own random number; the ranks pad to the largest count with
    weight-0 samples so that ClipLoss's all-gather (which needs equal sizes) goes through."""
    flags = [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        two_rank_data.train,
        "--dataset-type",
        "webdataset",
        "--workers",
        "1",
        "--logs",
        str(tmp_path),
        "--name",
        "infobatch",
        "--epochs",
        "2",
        "--selection",
        "infobatch",
        "--infobatch-anneal",
        "0",
    ]
    ranks(2, flags)
    first, second = read_jsonl(tmp_path / "infobatch" / "selection.jsonl")
    assert first["kept"] == 256 and second["kept"] < 256
    for rank in range(2):
        state = torch.load(
            tmp_path / "infobatch" / "checkpoints" / f"epoch_2.dissect-state.rank{rank}-of-2", weights_only=True
        )
        assert state["strategy"] == "infobatch" and len(state["store"]["hash"]) > 75


def test_weighted_clip_loss_across_two_ranks(tmp_path):
    """Global batch (weights gathered, one loss on every rank) and --local-loss (each rank its
    rows against every column) both equal the single-process per-sample losses, weighted."""

    for local in (False, True):
        start_ranks(_weighted_loss_worker, (2, str(tmp_path / f"init{local}"), str(tmp_path), local), nprocs=2)
        from open_clip_dissect.core.strategies import per_sample_infonce

        image, text, weights = _weighted_loss_inputs()
        per_sample = per_sample_infonce(image, text, torch.tensor(10.0))
        for rank in range(2):
            got = torch.load(tmp_path / f"loss{rank}.pt")
            if local:
                rows = slice(3 * rank, 3 * rank + 3)
                expected = (weights[rows] * per_sample[rows]).sum() / (4 + rank)
            else:
                expected = (weights * per_sample).sum() / 9
            assert torch.allclose(got, expected, atol=1e-5), (local, rank, got, expected)


def _weighted_loss_inputs():
    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=-1)
    return image, text, torch.tensor([2.0, 1.0, 0.0, 1.0, 2.0, 2.0])


def _weighted_loss_worker(rank, world, init_file, out_dir, local):
    import torch.distributed as dist

    from open_clip_dissect.openclip.training.weighted_loss import LossWeights, WeightedClipLoss

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        image, text, weights = _weighted_loss_inputs()
        rows = slice(3 * rank, 3 * rank + 3)
        channel = LossWeights()
        channel.push(weights[rows], candidates=4 + rank)  # 3 trained of 4 (rank 0) and of 5 (rank 1)
        loss = WeightedClipLoss(channel, local_loss=local, rank=rank, world_size=world)(
            image[rows], text[rows], torch.tensor(10.0)
        )
        torch.save(loss.detach(), os.path.join(out_dir, f"loss{rank}.pt"))
    finally:
        dist.destroy_process_group()
