"""Every rank's collectives, audited (``collective_audit``), on 2 and 4 gloo processes, for every
strategy in both selection scopes: every rank issues the same sequence; every dtype is one NCCL
moves; collectives and bytes received per step stay within budget (global scope: a rank receives
at most its own k training samples, whatever the world size, plus per-candidate metadata).
Also: one global decision even when the ranks' RNGs differ; a NaN on one rank stops every rank in
the same step with the same message; the epoch-end reduction on a rank that saw no batch."""

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from collective_audit import NCCL_DTYPES, CollectiveAudit

from open_clip_dissect.core.history import hash_keys
from open_clip_dissect.core.selector import Selector
from open_clip_dissect.core.strategies import Strategy, create_strategy, list_strategies, strategy_class
from open_clip_dissect.core.types import BatchScores, OracleFeatures

N, D, RATIO, K = 8, 4, 0.5, 4  # candidates per rank, embedding width, ratio, k
IMAGE, TEXT = (3, 16, 16), 6  # per-sample image shape (float32), text tokens (int64)
ROW_BYTES = 3 * 16 * 16 * 4 + TEXT * 8  # one training sample on the wire
OPTIONS = {"dissect-warmup": {"warmup_epochs": 1}, "scan": {"warmup_epochs": 1}, "infobatch": {"epochs": 4}}
EPOCHS, STEPS = 2, 2
# Collectives per step (after the epoch's first): history get (counts, hashes, answers) and
# update (scores + every rank's header) for the strategies that read the history; the header
# alone otherwise. Global scope: the gather to rank 0, the scatter of the decision, the samples.
BUDGET_COLLECTIVES = {("local", False): 1, ("local", True): 4, ("global", False): 3, ("global", True): 7}


def run(worker, args, nprocs, join=True):
    """The ranks as forked processes: they start without importing torch again (seconds each on
    a loaded machine); the parent has made no process group and runs no threads of its own."""
    mp.start_processes(worker, args=args, nprocs=nprocs, join=join, start_method="fork")


def scopes_of(name):
    cls = strategy_class(name)
    return ["local"] if cls.variable_kept else ["local", "global"]


def _columns(name):
    """Score columns a rank sends to rank 0 in global scope (per candidate, float32)."""
    cls = create_strategy(name, **OPTIONS.get(name, {}))
    width = 1 + (3 if cls.needs_loss else 0) + (2 * D if cls.needs_gradient else 0)
    return width + (2 if cls.needs_oracle else 0) + (2 if cls.needs_history else 0)


def budget_bytes(scope, name, world):
    """Bytes a rank may receive per step: in global scope its k samples and the global batch's
    score columns (rank 0 gathers them); in both, per own candidate a few history values and
    per rank a few header numbers."""
    meta = 64 * N + 64 * world
    if scope == "local":
        return meta
    return K * ROW_BYTES + 4 * _columns(name) * N * world + 32 * N + meta


def _batch(rank, epoch, step, skew=False):
    g = torch.Generator().manual_seed(1000 * rank + 10 * epoch + step)
    image, text = torch.randn(N, D, generator=g), torch.randn(N, D, generator=g)
    if skew and rank == 0:  # rank 0's pairs all match: clipscore keeps every one of them
        text = image.clone()
    oracle = OracleFeatures(torch.randn(N, D, generator=g), torch.randn(N, D, generator=g), torch.tensor(10.0))
    keys = [f"/shard{rank}/{step:02d}/{i:03d}" for i in range(N)]
    ids = torch.arange(N) + N * rank  # a candidate's global id, written into its pixels and tokens
    images = ids.float()[:, None, None, None].expand(N, *IMAGE).contiguous()
    texts = ids[:, None].expand(N, TEXT).contiguous()
    return image, text, oracle, keys, images, texts


def _init(rank, world, init_file, timeout=60):
    torch.set_num_threads(1)  # a forked child: no thread pool inherited half-made
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout),
    )
    from open_clip_dissect.distributed.communicator import Communicator

    return Communicator(rank, world)


def _selector(name, scope, comm, seed=0):
    from open_clip_dissect.distributed.exchange import RankExchange
    from open_clip_dissect.distributed.sharded_history import ShardedHistoryStore

    return Selector(
        create_strategy(name, **OPTIONS.get(name, {})),
        RATIO,
        seed,
        store=ShardedHistoryStore(comm=comm),
        comm=comm,
        exchange=RankExchange(comm) if scope == "global" else None,
    )


def _step(selector, comm, batch, epoch):
    """What the loader does for one candidate batch: the ids trained on by this rank."""
    image, text, oracle, keys, images, texts = batch
    if selector.strategy.needs_scores:
        scores = selector.scores(image, text, torch.tensor(10.0), oracle)
    else:  # random: no scoring pass (the loader without --selection-record), NaN CLIPScores
        scores = BatchScores.unmeasured(N, image.device)
    decision = selector.decide(hash_keys(keys), scores, epoch, keys)
    if selector.exchange is None:
        assert len(selector.kept_counts) == comm.world_size  # the loader pads to their max
        return images[decision.kept][:, 0, 0, 0].long()
    mine, their_texts = selector.exchange.rebalance(images, texts, decision.kept, selector.num_kept(N))
    assert torch.equal(mine[:, 0, 0, 0].long(), their_texts[:, 0])
    return mine[:, 0, 0, 0].long()


def _audit_worker(rank, world, init_file, out_dir):
    comm = _init(rank, world, init_file)
    try:
        audit, trained = CollectiveAudit(), {}
        with audit:
            for name in list_strategies():
                for scope in scopes_of(name):
                    selector = _selector(name, scope, comm)
                    for epoch in range(EPOCHS):
                        audit.label = (scope, name, epoch, "begin")
                        selector.begin_epoch(epoch)
                        for step in range(STEPS):
                            audit.label = (scope, name, epoch, step)
                            ids = _step(selector, comm, _batch(rank, epoch, step, skew=name == "clipscore"), epoch)
                            trained[audit.label] = ids.tolist()
                        audit.label = (scope, name, epoch, "end")
                        selector.end_epoch()
        calls = [(c.op, c.dtype, c.shape, c.backend, c.received, c.label) for c in audit.calls]
        torch.save({"calls": calls, "trained": trained}, os.path.join(out_dir, f"audit{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module", params=[2, 4])
def audited(request, tmp_path_factory):
    world = request.param
    out = tmp_path_factory.mktemp(f"audit{world}")
    run(_audit_worker, args=(world, str(out / "init"), str(out)), nprocs=world, join=True)
    return world, [torch.load(out / f"audit{r}.pt") for r in range(world)]


def test_every_rank_issues_the_same_collectives(audited):
    world, ranks = audited
    signatures = [
        [
            (op, dtype, shape[1:] if op == "all_to_all_single" else shape, backend, label)
            for op, dtype, shape, backend, _, label in r["calls"]
        ]
        for r in ranks
    ]
    assert all(s == signatures[0] for s in signatures[1:])
    assert len(signatures[0]) > 0


def test_every_dtype_is_one_nccl_moves(audited):
    _, ranks = audited
    names = {str(t).replace("torch.", "") for t in NCCL_DTYPES}
    used = {dtype for r in ranks for _, dtype, *_ in r["calls"] if dtype is not None}
    assert used <= names, used - names


def test_collectives_and_bytes_per_step_stay_within_budget(audited):
    world, ranks = audited
    for name in list_strategies():
        history = strategy_class(name).needs_history
        for scope in scopes_of(name):
            for epoch in range(EPOCHS):
                for step in range(STEPS):
                    label = (scope, name, epoch, step)
                    for rank, r in enumerate(ranks):
                        calls = [c for c in r["calls"] if c[5] == label]
                        assert len(calls) <= BUDGET_COLLECTIVES[(scope, history)], (label, rank, calls)
                        received = sum(c[4] for c in calls)
                        assert received <= budget_bytes(scope, name, world), (label, rank, received, calls)
                        if scope == "global":  # the samples: at most this rank's k, never more
                            samples = sum(c[4] for c in calls if c[1] == "uint8")
                            assert samples <= K * ROW_BYTES, (label, rank, samples)


def test_global_scope_trains_every_kept_sample_once(audited):
    world, ranks = audited
    for name in list_strategies():
        if "global" not in scopes_of(name):
            continue
        for epoch in range(EPOCHS):
            for step in range(STEPS):
                label = ("global", name, epoch, step)
                trained = [i for r in ranks for i in r["trained"][label]]
                assert all(len(r["trained"][label]) == (N if strategy_class(name).keeps_all else K) for r in ranks)
                assert len(set(trained)) == len(trained), (label, trained)  # none twice


def test_the_samples_that_move_are_only_those_a_rank_lacks(audited):
    """clipscore on a skewed batch: rank 0 keeps all its candidates (2k); it trains on k of
    them and sends the other k to the ranks that kept fewer; the others keep all they kept."""
    world, ranks = audited
    label = ("global", "clipscore", EPOCHS - 1, STEPS - 1)
    mine = ranks[0]["trained"][label]
    assert all(i < N for i in mine)  # rank 0 trains on its own samples only
    moved = [i for r in ranks[1:] for i in r["trained"][label] if i < N]
    assert len(moved) == N - K  # exactly its surplus left rank 0


def test_moves_fill_what_each_rank_lacks_from_the_surplus_in_rank_order():
    from open_clip_dissect.distributed.exchange import moves

    assert moves([6, 1, 4, 1], 3) == [[0, 2, 0, 1], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert moves([3, 3], 3) == [[0, 0], [0, 0]]
    assert moves([0, 8], 4) == [[0, 0], [4, 0]]


def test_sample_rows_round_trip_any_dtypes():
    from open_clip_dissect.distributed.exchange import as_rows, from_rows

    images = torch.randn(5, 3, 2, 2).to(torch.bfloat16)
    texts = torch.randint(0, 50000, (5, 7))
    back = from_rows(as_rows(images, texts)[1:4], images, texts)
    assert torch.equal(back[0], images[1:4]) and torch.equal(back[1], texts[1:4])
    empty = from_rows(as_rows(images[:0], texts[:0]), images, texts)
    assert empty[0].shape == (0, 3, 2, 2) and empty[1].shape == (0, 7)


# -- one decision, whatever the ranks compute ----------------------------------------------------
def _seeds_worker(rank, world, init_file, out_dir):
    comm = _init(rank, world, init_file)
    try:
        selector = _selector("random", "global", comm, seed=rank)  # ranks that would decide differently
        trained = []
        for step in range(3):
            batch = _batch(rank, 0, step)
            trained.append(_step(selector, comm, batch, 0).tolist())
        torch.save(trained, os.path.join(out_dir, f"seeds{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_global_scope_takes_one_decision_for_all_ranks(tmp_path):
    world = 2
    run(_seeds_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    got = [torch.load(tmp_path / f"seeds{r}.pt") for r in range(world)]
    for step in range(3):
        ids = [i for r in range(world) for i in got[r][step]]
        assert len(ids) == K * world and len(set(ids)) == len(ids)


# -- a NaN on one rank ------------------------------------------------------------------------------
NAN_CASES = [("local", "clipscore"), ("local", "dissect-mome"), ("global", "dissect-mome")]


def _nan_worker(rank, world, init_file, out_dir):
    comm = _init(rank, world, init_file, timeout=20)
    try:
        messages = []
        for scope, name in NAN_CASES:
            selector = _selector(name, scope, comm)
            _step(selector, comm, _batch(rank, 0, 0), 0)
            image, text, oracle, keys, images, texts = _batch(rank, 0, 1)
            if rank == 1:
                image[5] = float("nan")
            try:
                _step(selector, comm, (image, text, oracle, keys, images, texts), 0)
                messages.append(None)
            except FloatingPointError as exn:
                messages.append(str(exn))
        torch.save(messages, os.path.join(out_dir, f"nan{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_a_nan_on_one_rank_stops_every_rank_in_the_same_step(tmp_path):
    world = 2
    run(_nan_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    got = [torch.load(tmp_path / f"nan{r}.pt") for r in range(world)]
    for case, (scope, name) in enumerate(NAN_CASES):
        message = got[0][case]
        assert message is not None and all(g[case] == message for g in got), (scope, name, got)
        assert f"--selection {name}" in message and "/shard1/01/005 of rank 1" in message


# -- the epoch's end on a rank that saw no batch -------------------------------------------------------
class EpochWatcher(Strategy):
    """Keeps the first k; records the epochs it was told ended."""

    name = "epoch-watcher"

    def __init__(self):
        self.ended = []

    def rank(self, scores, history, epoch, generator):
        return -torch.arange(len(scores.curr), dtype=torch.float32)

    def end_epoch(self, epoch, signals):
        self.ended.append((epoch, signals.candidates, signals.retrieval))


def _idle_rank_worker(rank, world, init_file, out_dir):
    comm = _init(rank, world, init_file, timeout=10)
    try:
        selector = Selector(EpochWatcher(), RATIO, 0, comm=comm)
        if rank == 0:  # rank 0 enters epoch 3 and is handed its held-out score; rank 1 sees no batch
            selector.begin_epoch(3)
            selector.set_retrieval(42.0)
        selector.end_epoch()
        selector.end_epoch()  # between epochs on every rank: a reduction of zeros, nothing ends
        torch.save(selector.strategy.ended, os.path.join(out_dir, f"idle{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_epoch_end_reduces_on_a_rank_that_saw_no_batch(tmp_path):
    world = 2
    run(_idle_rank_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    for rank in range(world):
        assert torch.load(tmp_path / f"idle{rank}.pt") == [(3, 0, 42.0)]
