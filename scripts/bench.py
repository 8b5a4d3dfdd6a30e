#!/usr/bin/env python
"""``make bench``: time to accuracy, noise audit and step overhead of every strategy.

Profiles: ``smoke`` (a few steps of each part, run by the test suite), ``quick`` (CPU, about
40 minutes on 2 cores) and ``full`` (GPU). Writes ``bench/results/<profile>/``: ``results.md``
(also printed), ``time_to_accuracy.csv``, ``audit.csv``, ``step_overhead.csv`` and PNG plots.

Part 1 trains every strategy at every ratio, and ``none`` (full data), through
``python -m open_clip_dissect.main`` on the synthetic set in two regimes:
  (a) ``learning``: 40% ``shuffle`` noise, enough data that the model is still learning;
  (b) ``memorising``: 40% ``partial`` noise on a small set trained for many epochs.
Retrieval (R@sum, several captions per image) is measured after every epoch with the wall-clock
spent training so far, so each run reports when it first reaches the full-data run's final R@sum.
Part 2 times, for one model and batch: a stock OpenCLIP step on B, the no-grad scoring pass on
B, a training step on k = rB and the full selection step (scoring + selection + history +
training on k).
The reference-model strategies (``clipscore-oracle``, ``learnability``) score with a frozen
reference trained first, once, on clean pairs drawn with another seed (the generator's vocabulary
is fixed, so it transfers); its own R@sum on the test split is in the report.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time

from open_clip_dissect.core.strategies import list_strategies, strategy_class

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmarks import data as bench_data  # noqa: E402
from benchmarks.profiles import PROFILES as SEEDED_PROFILES  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDED = tuple(SEEDED_PROFILES)  # the seeded profiles (paper, web, ...): scripts/paper_bench.py runs them
# Every registered strategy: those that set their own kept counts run once each (r = "own").
RATIO_FREE = tuple(n for n in list_strategies() if strategy_class(n).variable_kept)
# observe trains on everything: it is the full-data run, not a ratio's strategy
STRATEGIES = tuple(n for n in list_strategies() if n not in RATIO_FREE and not strategy_class(n).keeps_all)
NEEDS_REFERENCE = tuple(n for n in list_strategies() if strategy_class(n).needs_oracle)  # a frozen reference

PROFILES = {
    "smoke": dict(
        regimes={"learning": dict(train=256, test=32, noise="shuffle", epochs=1, batch=32)},
        strategies=("dissect-mome", "learnability"),  # (random runs in the web and paper profiles' tests)
        ratio_free=("infobatch",),
        ratios=(0.5,),
        seeds=(0,),
        warmup_epochs=1,
        reference=dict(train=256, test=32, noise="shuffle", epochs=1, batch=32),
        model="dissect-vit-micro",  # the test suite's model: the smoke profile checks the parts run, not speed
        precision="fp32",
        workers=1,
        lr=1e-3,
        overhead=dict(batch=32, reps=1, warmup=0),  # (the smoke checks that each part runs)
        history=dict(sizes=(10**5,), batch=1024, steps=5, dict_max=10**5),
    ),
    "quick": dict(
        regimes={
            "learning": dict(train=3000, test=200, noise="shuffle", epochs=2, batch=64),
            "memorising": dict(train=512, test=200, noise="partial", epochs=12, batch=64),
        },
        strategies=STRATEGIES,
        ratio_free=RATIO_FREE,
        ratios=(0.3, 0.5, 0.7),
        seeds=(0,),
        warmup_epochs=1,
        reference=dict(train=3000, test=200, noise="shuffle", epochs=3, batch=64),
        model="dissect-vit-tiny",
        precision="fp32",
        workers=1,
        lr=1e-3,
        overhead=dict(batch=128, reps=15, warmup=3),
        history=dict(sizes=(10**6, 10**7, 10**8), batch=1024, steps=30, dict_max=10**7),
    ),
    "full": dict(
        regimes={
            "learning": dict(train=200000, test=1000, noise="shuffle", epochs=10, batch=512),
            "memorising": dict(train=20000, test=1000, noise="partial", epochs=60, batch=512),
        },
        strategies=STRATEGIES,
        ratio_free=RATIO_FREE,
        ratios=(0.3, 0.5, 0.7),
        seeds=(0, 1),
        warmup_epochs=5,
        reference=dict(train=50000, test=1000, noise="shuffle", epochs=5, batch=512),
        model="dissect-vit-tiny",
        precision="amp",
        workers=8,
        lr=1e-3,
        overhead=dict(batch=512, reps=30, warmup=5),
        history=dict(sizes=(10**6, 10**7, 10**8), batch=4096, steps=30, dict_max=10**7),
    ),
}


def log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------- part 1


def make_data(root, name, spec, seed=0, noise_rate=0.4):
    arguments = bench_data.data_arguments(
        train=spec["train"], test=spec["test"], seed=seed, noise_rate=noise_rate, noise_kind=spec["noise"]
    )
    return bench_data.make_data(root, name, arguments, workers=os.cpu_count() or 1)


def train_run(cfg, manifest, spec, logs, name, strategy, ratio, seed, record_dir=None, reference=None):
    run_dir = os.path.join(logs, name)
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = bench_data.training_command(
        cfg["model"],
        spec["batch"],
        cfg["lr"],
        10,
        seed,
        spec["epochs"],
        manifest,
        logs,
        name,
        strategy,
        precision=cfg["precision"],
        workers=cfg["workers"],
    )
    cmd += ["--dissect-warmup-epochs", str(cfg["warmup_epochs"]), "--scan-warmup-epochs", str(cfg["warmup_epochs"])]
    if ratio != "own":
        cmd += ["--ratio", str(ratio)]
    if record_dir:
        cmd += ["--selection-record", record_dir]
    if strategy in NEEDS_REFERENCE:
        cmd += ["--oracle-model", cfg["model"], "--oracle-checkpoint", reference]
    started = time.perf_counter()
    bench_data.run_training(name, cmd, {**os.environ, "WANDB_MODE": "disabled"})
    results, audit, _ = bench_data.read_run(run_dir)
    return {
        "curve": [(r["epoch"], r["train_seconds"], r["retrieval_R@sum"]) for r in results if "retrieval_R@sum" in r],
        "audit": audit,
        "process_seconds": time.perf_counter() - started,
    }


def reference_model(cfg, root):
    """Train the frozen reference of the reference-model strategies once; return its checkpoint
    path and its final R@sum on its own (clean) test split."""
    spec = cfg["reference"]
    manifest = make_data(root, "reference", spec, seed=7, noise_rate=0.0)
    log("[bench] reference model (clean pairs, seed 7) ...")
    logs = os.path.join(root, "logs")
    out = train_run(cfg, manifest, spec, logs, "reference", "none", "own", 0)
    return os.path.join(logs, "reference", "checkpoints", f"epoch_{spec['epochs']}.pt"), out["curve"][-1][2]


def time_to_accuracy(cfg, root):
    rows, audit_rows, curves, kept = [], [], {}, {}
    logs = os.path.join(root, "logs")
    reference, reference_rsum = None, None
    if any(s in NEEDS_REFERENCE for s in cfg["strategies"]):
        reference, reference_rsum = reference_model(cfg, root)
    for regime, spec in cfg["regimes"].items():
        manifest = make_data(root, regime, spec)
        for seed in cfg["seeds"]:
            runs = (
                [("none", 1.0)]
                + [(s, r) for r in cfg["ratios"] for s in cfg["strategies"]]
                + [(s, "own") for s in cfg["ratio_free"]]
            )
            for strategy, ratio in runs:
                name = f"{regime}-{strategy}-r{ratio}-s{seed}"
                record = (
                    os.path.join(root, "records", name)
                    if (strategy == "dissect-mome" and ratio == 0.5 and seed == cfg["seeds"][0])
                    else None
                )
                log(f"[bench] {name} ...")
                out = train_run(cfg, manifest, spec, logs, name, strategy, ratio, seed, record, reference)
                curves[(regime, strategy, ratio, seed)] = out["curve"]
                kept[(regime, strategy, ratio, seed)] = (
                    sum(a["kept"] for a in out["audit"]) / sum(a["candidates"] for a in out["audit"])
                    if out["audit"]
                    else 1.0
                )
                for a in out["audit"]:
                    audit_rows.append(
                        {
                            "regime": regime,
                            "strategy": strategy,
                            "ratio": ratio,
                            "seed": seed,
                            "epoch": a["epoch"],
                            "kept_precision": a.get("audit_kept_precision"),
                            "random_precision": a.get("audit_random_precision"),
                            "auroc": a.get("audit_auroc"),
                        }
                    )
                if record:
                    shutil.copy(
                        os.path.join(record, "distributions.png"),
                        os.path.join(root, f"distributions_{regime}_dissect-mome.png"),
                    )
            full = curves[(regime, "none", 1.0, seed)]
            target, full_seconds = full[-1][2], full[-1][1]
            for (reg, strategy, ratio, s), curve in curves.items():
                if reg != regime or s != seed:
                    continue
                reached = next((t for _, t, r in curve if r >= target), None)
                rows.append(
                    {
                        "regime": regime,
                        "strategy": strategy,
                        "ratio": ratio,
                        "seed": seed,
                        "kept_fraction": kept[(reg, strategy, ratio, s)],
                        "final_rsum": curve[-1][2],
                        "best_rsum": max(r for _, _, r in curve),
                        "train_seconds": curve[-1][1],
                        "seconds_to_full_final": reached,
                        "speedup": (full_seconds / reached) if reached else None,
                    }
                )
    return rows, audit_rows, curves, reference_rsum


# ----------------------------------------------------------------------------- part 2


# step_overhead.csv's columns (scripts/gpu_check.py reads them)
OVERHEAD_COLUMNS = (
    "device",
    "batch",
    "ratio",
    "k",
    "stock_step",
    "scoring_pass",
    "train_step_k",
    "selection_step",
    "overhead_over_floor",
    "vs_stock",
    "random_step",
    "random_over_k",
    "random_vs_stock",
)


def step_overhead(cfg):
    import open_clip
    import torch
    from open_clip_train.precision import get_autocast

    from open_clip_dissect.core import strategies
    from open_clip_dissect.core.epoch_decisions import EpochDecisions
    from open_clip_dissect.core.history import hash_keys
    from open_clip_dissect.core.scorer import Scorer
    from open_clip_dissect.core.selector import Selector
    from open_clip_dissect.openclip.models.configs import register_model_configs
    from open_clip_dissect.openclip.training.selecting_loader import LoaderConfig, SelectingLoader

    register_model_configs()
    spec = cfg["overhead"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = cfg["precision"] if device == "cuda" else "fp32"
    autocast = get_autocast(precision, device_type=device)
    input_dtype = open_clip.get_input_dtype(precision)
    torch.manual_seed(0)
    model = open_clip.create_model(cfg["model"], output_dict=True).to(device)
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device=device) if precision == "amp" else None
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    B = spec["batch"]
    tokens = open_clip.get_tokenizer(cfg["model"])([f"a small red circle number {i}" for i in range(B)])
    images = torch.randn(B, 3, size, size)
    keys = [f"/data/shards/{i // 1000:05d}.tar/{i:09d}" for i in range(B)]
    hashes = hash_keys(keys)  # the loader workers hash the keys, off the timed path
    noisy = torch.zeros(B, dtype=torch.int8)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def train_step(x, t):
        opt.zero_grad(set_to_none=True)
        with autocast():
            out = model(x.to(device=device, dtype=input_dtype), t.to(device))
            loss = loss_fn(**out)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    def timed(fn, reps=spec["reps"], warmup=spec["warmup"]):
        times = []
        for i in range(warmup + reps):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    config = LoaderConfig(
        selection="dissect-mome",
        candidates=B,
        device=device,
        input_dtype=input_dtype,
        autocast=autocast,
        log_every_n_steps=10**9,
    )
    rows = []
    stock = timed(lambda: train_step(images, tokens))
    scorer = Scorer(model, autocast=autocast, logit_scale=False)  # what dissect-mome reads
    scoring = timed(lambda: scorer(images.to(device=device, dtype=input_dtype), tokens.to(device)))
    for ratio in (0.3, 0.5, 0.7):
        k = strategies.num_kept(B, ratio)
        train_k = timed(lambda: train_step(images[:k], tokens[:k]))
        steps = {}
        for name in ("dissect-mome", "random"):  # random: no scoring pass (no --selection-record)
            selector = Selector(strategies.create_strategy(name), ratio=ratio)
            batches = iter(
                SelectingLoader(
                    _Repeat((images, tokens, keys, hashes, noisy)), selector, model, config, 1, EpochDecisions()
                )
            )
            steps[name] = timed(lambda: train_step(*next(batches)))
        full = steps["dissect-mome"]
        rows.append(  # the columns: OVERHEAD_COLUMNS
            {
                "device": device,
                "batch": B,
                "ratio": ratio,
                "k": k,
                "stock_step": stock,
                "scoring_pass": scoring,
                "train_step_k": train_k,
                "selection_step": full,
                "overhead_over_floor": full / (scoring + train_k),
                "vs_stock": full / stock,
                "random_step": steps["random"],
                "random_over_k": steps["random"] / train_k,
                "random_vs_stock": steps["random"] / stock,
            }
        )
    return rows


def history_throughput(cfg):
    """Batch get+update of the HistoryStore at several sizes vs a Python dict keyed by string
    doing the same work per sample (what the paper's code does). Keys are 12-digit strings; the
    store is pre-filled through ``load_state_dict`` with their hashes, computed here without
    building the strings (FNV-1a over digit columns, checked against ``hash_keys``)."""
    import numpy as np
    import torch

    from open_clip_dissect.core.history import HistoryStore, hash_keys
    from open_clip_dissect.core.history import _merge_sorted as _merge

    spec = cfg["history"]
    width, B = 12, spec["batch"]

    def digit_hashes(ids):
        h = np.full(len(ids), 0xCBF29CE484222325, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(width):
                digit = (ids // 10 ** (width - 1 - j)) % 10 + ord("0")
                h = (h ^ digit.astype(np.uint64)) * np.uint64(0x100000001B3)
        return torch.from_numpy(h.view(np.int64))

    sample = np.array([0, 7, 123456789, 10**11 + 5], dtype=np.int64)
    assert torch.equal(digit_hashes(sample), hash_keys([f"{i:012d}" for i in sample]))
    rows = []
    rng = np.random.default_rng(0)
    for n in spec["sizes"]:
        ids = np.arange(n, dtype=np.int64)
        hashes = torch.sort(digit_hashes(ids)).values
        store = HistoryStore()
        store.load_state_dict(
            {
                "hash": hashes,
                "score": torch.zeros(n),
                "epoch": torch.zeros(n, dtype=torch.int16),
                "visits": torch.zeros(n, dtype=torch.int16),
            }
        )
        del hashes
        batches = []
        for _ in range(spec["steps"]):
            known = rng.integers(0, n, size=B - B // 10)
            new = rng.integers(n, 2 * n + 10**6, size=B // 10)
            batches.append([f"{i:012d}" for i in np.concatenate([known, new])])
        scores = torch.rand(B)

        def store_step(keys):
            h = hash_keys(keys)
            store.get(h)
            store.update(h, scores, 1, batch_size=B)

        store_step(batches[0])
        start = time.perf_counter()
        for keys in batches[1:]:
            store_step(keys)
        store_s = (time.perf_counter() - start) / (len(batches) - 1)
        # The fresh run is merged into the main one when it outgrows sqrt(2 n B): time one such
        # merge and spread it over the batches that fill the fresh run.
        limit = int((2.0 * n * B) ** 0.5)
        fresh = {
            "hash": torch.sort(digit_hashes(np.arange(n, n + limit, dtype=np.int64))).values,
            "score": torch.zeros(limit),
            "epoch": torch.zeros(limit, dtype=torch.int16),
            "visits": torch.zeros(limit, dtype=torch.int16),
        }
        start = time.perf_counter()
        merged = _merge(store.main, fresh)
        merge_s = time.perf_counter() - start
        del merged, fresh
        amortised = merge_s * (B // 10) / limit
        row = {
            "keys": n,
            "batch": B,
            "store_s_per_batch": store_s + amortised,
            "merge_s": merge_s,
            "store_keys_per_s": B / (store_s + amortised),
            "store_bytes_per_key": store.nbytes / len(store),
            "dict_s_per_batch": None,
            "dict_vs_store": None,
        }
        store_s += amortised
        if n <= spec["dict_max"]:
            table = {f"{i:012d}": (0.0, 0, 0) for i in range(n)}
            values = scores.tolist()

            def dict_step(keys):
                for key, value in zip(keys, values):
                    old = table.get(key)
                    if old is None:
                        table[key] = (value, 1, 1)
                    else:
                        table[key] = (0.9 * old[0] + 0.1 * value, 1, old[2] + 1)

            start = time.perf_counter()
            for keys in batches[1:]:
                dict_step(keys)
            dict_s = (time.perf_counter() - start) / (len(batches) - 1)
            row.update(dict_s_per_batch=dict_s, dict_vs_store=dict_s / store_s)
            del table
        rows.append(row)
        log(f"[bench] history store at {n} keys: {store_s * 1e3:.2f} ms per batch of {B}")
    return rows


def exchange_throughput(cfg, root):
    """Sharded get+update with 2 gloo processes on this machine (one step = both collectives)."""
    import torch.multiprocessing as mp

    spec = cfg["history"]
    out = os.path.join(root, "exchange.json")
    mp.start_processes(  # forked from a server that imported this script (and torch) once
        _exchange_worker,
        args=(2, os.path.join(root, "exchange-init"), out, spec["batch"], spec["sizes"][0], spec["steps"]),
        nprocs=2,
        join=True,
        start_method="forkserver",
    )
    os.remove(os.path.join(root, "exchange-init")) if os.path.exists(os.path.join(root, "exchange-init")) else None
    with open(out) as f:
        return json.load(f)


def _exchange_worker(rank, world, init_file, out, B, n, steps):
    import numpy as np
    import torch
    import torch.distributed as dist

    from open_clip_dissect.core.history import hash_keys
    from open_clip_dissect.distributed.communicator import Communicator
    from open_clip_dissect.distributed.sharded_history import ShardedHistoryStore

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        store = ShardedHistoryStore(comm=Communicator(rank, world))
        rng = np.random.default_rng(rank)
        batches = [hash_keys([f"{i:012d}" for i in rng.integers(0, n, size=B)]) for _ in range(steps)]
        scores = torch.rand(B)
        times = []
        for h in batches:
            dist.barrier()
            start = time.perf_counter()
            store.get(h)
            store.update(h, scores, 0)
            times.append(time.perf_counter() - start)
        if rank == 0:
            step = statistics.median(times[len(times) // 3 :])  # after the store has filled up
            with open(out, "w") as f:
                json.dump(
                    {
                        "keys": n,
                        "batch": B,
                        "exchange": True,
                        "store_s_per_batch": step,
                        "store_keys_per_s": B / step,
                        "store_bytes_per_key": store.nbytes / max(len(store), 1),
                        "local_keys": len(store),
                    },
                    f,
                )
    finally:
        dist.destroy_process_group()


class _Repeat:
    """An endless loader repeating one keyed batch (for timing)."""

    num_batches = 10**9
    num_samples = 10**9

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


# ----------------------------------------------------------------------------- report


def fmt(v, digits=2):
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def plots(root, curves, audit_rows, cfg):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for regime in cfg["regimes"]:
        fig, axes = plt.subplots(1, len(cfg["ratios"]), figsize=(5 * len(cfg["ratios"]), 4), squeeze=False)
        for ax, ratio in zip(axes[0], cfg["ratios"]):
            full = curves[(regime, "none", 1.0, cfg["seeds"][0])]
            ax.plot([t for _, t, _ in full], [r for _, _, r in full], "k--o", label="none (full)")
            own = [(s, "own", ":s", f"{s} (own r)") for s in cfg["ratio_free"]]
            for strategy, r, style, label in [(s, ratio, "-o", s) for s in cfg["strategies"]] + own:
                c = curves.get((regime, strategy, r, cfg["seeds"][0]))
                if c:
                    ax.plot([t for _, t, _ in c], [x for _, _, x in c], style, ms=3, label=label)
            ax.set(title=f"{regime}, r = {ratio}", xlabel="training wall-clock (s)", ylabel="R@sum")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(root, f"rsum_vs_time_{regime}.png"), dpi=90)
        plt.close(fig)

        fig, axes = plt.subplots(1, len(cfg["ratios"]), figsize=(5 * len(cfg["ratios"]), 4), squeeze=False)
        for ax, ratio in zip(axes[0], cfg["ratios"]):
            for strategy in cfg["strategies"]:
                pts = [
                    (a["epoch"], a["kept_precision"])
                    for a in audit_rows
                    if a["regime"] == regime
                    and a["strategy"] == strategy
                    and a["ratio"] == ratio
                    and a["seed"] == cfg["seeds"][0]
                ]
                if pts:
                    ax.plot(*zip(*pts), "-o", ms=3, label=strategy)
            base = [a["random_precision"] for a in audit_rows if a["regime"] == regime]
            if base:
                ax.axhline(statistics.mean(base), color="k", ls="--", label="clean fraction")
            ax.set(title=f"{regime}, r = {ratio}", xlabel="epoch", ylabel="kept-set precision")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(root, f"kept_precision_{regime}.png"), dpi=90)
        plt.close(fig)


def write_report(root, profile, rows, audit_rows, overhead, history, started, reference_rsum=None):
    import pandas as pd

    pd.DataFrame(rows).to_csv(os.path.join(root, "time_to_accuracy.csv"), index=False)
    pd.DataFrame(audit_rows).to_csv(os.path.join(root, "audit.csv"), index=False)
    pd.DataFrame(overhead, columns=list(OVERHEAD_COLUMNS)).to_csv(os.path.join(root, "step_overhead.csv"), index=False)
    pd.DataFrame(history).to_csv(os.path.join(root, "history_store.csv"), index=False)
    last_audit = {}
    for a in audit_rows:
        last_audit[(a["regime"], a["strategy"], a["ratio"], a["seed"])] = a
    lines = [
        f"# Benchmark, profile `{profile}`",
        "",
        f"Command: `make bench PROFILE={profile}`; machine: {machine()}; "
        f"{time.strftime('%Y-%m-%d')}; total {time.time() - started:.0f} s.",
        "",
        "## Time to accuracy",
        "",
        "`seconds to full` = training wall-clock at the end of the first epoch whose R@sum reaches "
        "the full-data run's final R@sum; `speed-up` = full-data wall-clock / that. `precision` = "
        "kept-set precision in the last epoch (clean fraction of all candidates in brackets); `kept` = "
        "fraction of all candidates trained on over the run (r = `own`: the strategy sets its counts)."
        + (
            f" clipscore-oracle and learnability score with a frozen reference trained on clean pairs of "
            f"another seed (R@sum {reference_rsum:.1f} on its own test split)."
            if reference_rsum is not None
            else ""
        ),
        "",
        "| regime | strategy | r | kept | seed | final R@sum | best R@sum | train s | s to full | speed-up | precision | AUROC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        a = last_audit.get((r["regime"], r["strategy"], r["ratio"], r["seed"]), {})
        prec = f"{fmt(a.get('kept_precision'), 3)} ({fmt(a.get('random_precision'), 3)})" if a else "-"
        lines.append(
            f"| {r['regime']} | {r['strategy']} | {r['ratio']} | {fmt(r['kept_fraction'], 2)} | {r['seed']} | "
            f"{fmt(r['final_rsum'], 1)} | "
            f"{fmt(r['best_rsum'], 1)} | {fmt(r['train_seconds'], 1)} | {fmt(r['seconds_to_full_final'], 1)} | "
            f"{fmt(r['speedup'])} | {prec} | {fmt(a.get('auroc'), 3)} |"
        )
    if len({r["seed"] for r in rows}) > 1:
        frame = pd.DataFrame(rows)
        spread = frame.groupby(["regime", "strategy", "ratio"], sort=False)["final_rsum"].agg(["mean", "std", "count"])
        lines += [
            "",
            "### Seed spread of the final R@sum",
            "",
            "| regime | strategy | r | mean | std | seeds |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for (regime, strategy, ratio), g in spread.iterrows():
            lines.append(f"| {regime} | {strategy} | {ratio} | {g['mean']:.1f} | {g['std']:.1f} | {int(g['count'])} |")
    lines += [
        "",
        "## Step overhead (medians)",
        "",
        "`selection step` = a `dissect-mome` step through the selecting loader; `over floor` = "
        "selection step / (scoring pass + training step on k), target <= 1.05; `vs stock` = "
        "selection step / stock OpenCLIP step on B; `random step`: a `random` step (no scoring pass), "
        "`/ k` its ratio to the training step on k, then to the stock step.",
        "",
        "| device | B | r | k | stock step s | scoring s | train on k s | selection step s | over floor | vs stock "
        "| random step s | / k | / stock |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in overhead:
        lines.append(
            f"| {o['device']} | {o['batch']} | {o['ratio']} | {o['k']} | {o['stock_step']:.4f} | "
            f"{o['scoring_pass']:.4f} | {o['train_step_k']:.4f} | {o['selection_step']:.4f} | "
            f"{o['overhead_over_floor']:.3f} | {o['vs_stock']:.3f} | {o['random_step']:.4f} | "
            f"{o['random_over_k']:.3f} | {o['random_vs_stock']:.3f} |"
        )
    lines += [
        "",
        "## History store (single process, CPU)",
        "",
        "Batch = hash the string keys, get, update (90% known keys, 10% new), plus the amortised "
        "share of merging the fresh run into the main one (`merge s`: one merge). The dict "
        "baseline does the same work per sample in Python (the paper's code); skipped where it "
        "would not fit in memory. `exchange` rows: 2 gloo processes, one sharded get+update per step.",
        "",
        "| keys | batch | store ms/batch | merge s | store keys/s | bytes/key | dict ms/batch | dict / store |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for h in history:
        dict_ms = f"{h['dict_s_per_batch'] * 1e3:.2f}" if h.get("dict_s_per_batch") else "-"
        ratio = f"{h['dict_vs_store']:.2f}" if h.get("dict_vs_store") else "-"
        merge = f"{h['merge_s']:.3f}" if h.get("merge_s") is not None else "-"
        label = f"exchange, 2 processes, keys drawn from {h['keys']:,}" if h.get("exchange") else f"{h['keys']:,}"
        lines.append(
            f"| {label} | {h['batch']} | "
            f"{h['store_s_per_batch'] * 1e3:.2f} | {merge} | {h['store_keys_per_s']:,.0f} | "
            f"{h['store_bytes_per_key']:.1f} | {dict_ms} | {ratio} |"
        )
    lines += ["", "Plots: " + ", ".join(sorted(p for p in os.listdir(root) if p.endswith(".png")))]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write(text)
    return text


def machine():
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--profile",
        choices=sorted([*PROFILES, *SEEDED]),
        default="quick",
        help="Profile; 'paper', 'web' and every profile of scripts/benchmarks/profiles/ are the seeded "
        "profiles of scripts/paper_bench.py, with seeds and intervals (default: quick).",
    )
    p.add_argument(
        "--out",
        default=None,
        help="Output folder (default: bench/results/<profile>; the seeded profiles' own: docs/web_bench, "
        "docs/real_bench, bench/results/paper).",
    )
    p.add_argument(
        "--parts",
        default="accuracy,overhead,history",
        help="Comma-separated parts to run (default: accuracy,overhead,history).",
    )
    p.add_argument(
        "--strategies",
        default=None,
        help="Comma-separated strategies for the accuracy part; the full-data run always "
        "runs (default: the profile's).",
    )
    args = p.parse_args(argv)
    if args.profile in SEEDED:
        from benchmarks import cli

        return cli.main(["--profile", args.profile] + (["--out", args.out] if args.out else []))
    cfg = dict(PROFILES[args.profile])
    if args.strategies:
        chosen = args.strategies.split(",")
        unknown = sorted(set(chosen) - set(STRATEGIES) - set(RATIO_FREE))
        if unknown:
            p.error(f"--strategies: unknown {unknown}; choose from {STRATEGIES + RATIO_FREE}")
        cfg["strategies"] = tuple(s for s in chosen if s not in RATIO_FREE)
        cfg["ratio_free"] = tuple(s for s in chosen if s in RATIO_FREE)
    root = os.path.abspath(args.out or os.path.join(REPO, "bench", "results", args.profile))
    os.makedirs(root, exist_ok=True)
    started = time.time()
    parts = set(args.parts.split(","))
    rows, audit_rows, curves, overhead, history, reference_rsum = [], [], {}, [], [], None
    if "accuracy" in parts:
        rows, audit_rows, curves, reference_rsum = time_to_accuracy(cfg, root)
        plots(root, curves, audit_rows, cfg)
    if "overhead" in parts:
        log("[bench] step overhead ...")
        overhead = step_overhead(cfg)
    if "history" in parts:
        history = history_throughput(cfg) + [exchange_throughput(cfg, root)]
    print(write_report(root, args.profile, rows, audit_rows, overhead, history, started, reference_rsum))
    return 0


if __name__ == "__main__":
    sys.exit(main())
