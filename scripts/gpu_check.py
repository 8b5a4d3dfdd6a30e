#!/usr/bin/env python
"""``make gpu-check``: everything that needs a GPU, one verdict per line (docs/gpu-check.md).

    PASS|WARN|FAIL|SKIP <check>: <detail>

Checks, each in its own process, within ``--budget`` seconds in all (default 480; a check that
would start past it is SKIPped): the pytest tests marked ``cuda``; one epoch of ``dissect-mome``
on tiny synthetic data with ``--precision amp`` and with ``amp_bf16`` (``--selection-record``
on, so the epoch-end plot runs too); the same under ``--torchcompile``; the selection path under
``torch.cuda.set_sync_debug_mode("warn")``, counting host syncs; ``--deterministic`` (two runs
bit-identical, and its cost: the epoch time against the plain amp run's); with two or more GPUs, 2-rank
NCCL runs (torchrun) in local and in global scope; the step-time table of ``scripts/bench.py
--profile full --parts overhead``. Nothing is downloaded.

Exit status: 0 when no check FAILed (WARN and SKIP included), 1 when one did, and 5 when there is
no CUDA device at all: then one line says so and nothing runs (as pytest's 5, "no tests ran").
"""

import argparse
import collections
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_CUDA = 5
MODEL = "dissect-vit-tiny"
LOSS = re.compile(r"Contrastive_loss: (\S+)")


class Verdicts:
    """Prints each verdict as it comes; ``deadline`` (time.monotonic) bounds when a check starts:
    one with less than ``shortest`` seconds left is skipped."""

    def __init__(self, budget: float, out=None, shortest: float = 10.0):
        self.deadline = time.monotonic() + budget
        self.shortest = shortest
        self.out = out or sys.stdout
        self.lines = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, verdict: str, check: str, detail: str) -> None:
        line = f"{verdict} {check}: {detail}"
        self.lines.append(line)
        print(line, file=self.out, flush=True)

    def failed(self) -> bool:
        return any(line.startswith("FAIL ") for line in self.lines)

    def run(self, check: str, cmd, timeout: float, env=None, cwd=None):
        """Run ``cmd``; None (and a verdict) when it could not start, timed out or failed, else
        its CompletedProcess (the caller gives the verdict)."""
        limit = min(timeout, self.left())
        if limit < self.shortest:
            self.say("SKIP", check, f"out of time (--budget); {max(self.left(), 0):.0f} s left")
            return None
        started = time.monotonic()
        try:
            result = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=limit,
                cwd=cwd,
                env={**os.environ, "WANDB_MODE": "disabled", **(env or {})},
            )
        except subprocess.TimeoutExpired:
            self.say("FAIL", check, f"timed out after {limit:.0f} s: {' '.join(map(str, cmd))[:200]}")
            return None
        result.seconds = time.monotonic() - started
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
            self.say("FAIL", check, f"exit {result.returncode} after {result.seconds:.0f} s: {tail[0][:300]}")
            return None
        return result


def train_flags(data, logs, name, *extra):
    return [
        "--model",
        MODEL,
        "--batch-size",
        "128",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--warmup",
        "5",
        "--workers",
        "2",
        "--seed",
        "0",
        "--log-every-n-steps",
        "4",
        "--device",
        "cuda",
        "--train-data",
        data["train"],
        "--val-data",
        data["val"],
        "--dataset-type",
        "webdataset",
        "--selection",
        "dissect-mome",
        "--ratio",
        "0.5",
        "--logs",
        logs,
        "--name",
        name,
        "--selection-record",
        os.path.join(logs, name, "records"),
        *extra,
    ]


def check_run(verdicts, check, cmd, logs, name, timeout, env=None):
    """A training run: it exits 0, writes its epoch summary with scoring time, its plot, and
    logs only finite losses."""
    result = verdicts.run(check, cmd, timeout, env=env)
    if result is None:
        return
    run_dir = os.path.join(logs, name)
    try:
        with open(os.path.join(run_dir, "selection.jsonl")) as f:
            summary = json.loads(f.read().splitlines()[-1])
        with open(os.path.join(run_dir, "out.log")) as f:
            losses = [float(m.group(1)) for m in LOSS.finditer(f.read())]
    except (OSError, ValueError, IndexError) as exn:
        verdicts.say("FAIL", check, f"no epoch summary or log in {run_dir}: {exn}")
        return
    plot = os.path.join(run_dir, "records", "distributions.png")
    if not losses or not all(math.isfinite(x) for x in losses):
        verdicts.say("FAIL", check, f"non-finite or no loss in out.log: {losses[-3:]}")
    elif not os.path.exists(plot):
        verdicts.say("FAIL", check, f"no {plot}")
    else:
        share = summary["time_scoring"] / max(summary["time_scoring"] + summary["time_training"], 1e-9)
        verdicts.say(
            "PASS",
            check,
            f"{result.seconds:.0f} s, {summary['candidates']} candidates, kept "
            f"{summary['kept']}, last loss {losses[-1]:.3f}, scoring share {share:.0%}",
        )


def epoch_seconds(logs, name):
    """The scoring plus training time of a run's last epoch (its ``selection.jsonl``), or None."""
    try:
        with open(os.path.join(logs, name, "selection.jsonl")) as f:
            row = json.loads(f.read().splitlines()[-1])
        return row["time_scoring"] + row["time_training"]
    except (OSError, ValueError, IndexError, KeyError):
        return None


def same_bits(logs, a, b):
    """Whether runs ``a`` and ``b`` ended with bit-identical weights: (bool, the first tensor that differs)."""
    import torch

    first, second = (
        torch.load(os.path.join(logs, n, "checkpoints", "epoch_1.pt"), map_location="cpu")["state_dict"] for n in (a, b)
    )
    differing = [k for k in first if not torch.equal(first[k], second[k])]
    return not differing, differing[0] if differing else None


def determinism_check(verdicts, main_module, data, logs):
    """``--deterministic`` on this GPU: two runs of the amp epoch with the flag must end with the
    same bits; their step time against the plain ``amp`` run's is the flag's cost here."""
    check = "deterministic"
    for name in ("det1", "det2"):
        cmd = main_module + train_flags(data, logs, name, "--precision", "amp", "--deterministic")
        if verdicts.run(check, cmd, 90) is None:
            return
    try:
        same, first = same_bits(logs, "det1", "det2")
    except (OSError, RuntimeError, KeyError) as exn:
        verdicts.say("FAIL", check, f"no checkpoint to compare: {exn}")
        return
    plain, pinned = epoch_seconds(logs, "amp"), epoch_seconds(logs, "det1")
    cost = (
        f"epoch {pinned:.1f} s against {plain:.1f} s without the flag ({pinned / plain:.2f}x)"
        if plain and pinned
        else "no epoch time"
    )
    if same:
        verdicts.say("PASS", check, f"two runs bit-identical; {cost}")
    else:
        verdicts.say(
            "WARN", check, f"two runs differ (first in {first}): a kernel without a deterministic version; {cost}"
        )


def sync_probe(steps: int = 8, batch: int = 256) -> int:
    """Print ``<syncs> <steps> <site>=<count>...``: host syncs in the selection path (scoring,
    decision, record) of ``dissect-mome`` in its second epoch (history in use), CUDA events on.
    Steps that log (the window's first and last: one sync each, by design) are not counted: the
    mode set while step i is consumed covers the making of step i + 1."""
    import warnings

    import open_clip
    import torch
    from open_clip_train.precision import get_autocast

    from open_clip_dissect.core import strategies
    from open_clip_dissect.core.epoch_decisions import EpochDecisions
    from open_clip_dissect.core.history import hash_keys
    from open_clip_dissect.core.selector import Selector
    from open_clip_dissect.openclip.models.configs import register_model_configs
    from open_clip_dissect.openclip.training.selecting_loader import LoaderConfig, SelectingLoader

    register_model_configs()
    model = open_clip.create_model(MODEL, output_dict=True).cuda()
    tokens = open_clip.get_tokenizer(MODEL)([f"a small red circle number {i}" for i in range(batch)])
    keys = [f"/data/{i:09d}" for i in range(batch)]

    class Batches:
        num_batches = steps

        def __iter__(self):
            for _ in range(steps):
                yield (
                    torch.randn(batch, 3, 32, 32),
                    tokens.clone(),
                    keys,
                    hash_keys(keys),
                    torch.zeros(batch, dtype=torch.int8),
                )

    config = LoaderConfig(
        selection="dissect-mome",
        candidates=batch,
        device="cuda",
        autocast=get_autocast("amp", device_type="cuda"),
        log_every_n_steps=10**6,
        pin_memory=True,
    )
    selector = Selector(strategies.create_strategy("dissect-mome"), ratio=0.5)
    sites = collections.Counter()
    for epoch in range(2):
        loader = SelectingLoader(Batches(), selector, model, config, epoch, EpochDecisions())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i, _ in enumerate(loader):
                counting = epoch == 1 and 1 <= i < steps - 2
                torch.cuda.set_sync_debug_mode("warn" if counting else 0)
            torch.cuda.set_sync_debug_mode(0)
        sites.update(
            f"{os.path.relpath(w.filename, REPO)}:{w.lineno}"
            for w in caught
            if epoch == 1 and "synchroniz" in str(w.message)
        )
        selector.end_epoch()
    print(sum(sites.values()), steps - 3, *(f"{site}={n}" for site, n in sites.most_common(5)))
    return 0


def bench_table(verdicts, work):
    out = os.path.join(work, "bench")
    result = verdicts.run(
        "bench-step-times",
        [
            sys.executable,
            os.path.join(REPO, "scripts", "bench.py"),
            "--profile",
            "full",
            "--parts",
            "overhead",
            "--out",
            out,
        ],
        180,
    )
    if result is None:
        return []
    import csv

    with open(os.path.join(out, "step_overhead.csv")) as f:
        rows = list(csv.DictReader(f))
    worst = max(float(r["overhead_over_floor"]) for r in rows)
    verdicts.say(
        "PASS" if worst <= 1.05 else "WARN",
        "bench-step-times",
        f"selection step / (scoring + train on k) <= {worst:.3f} (target 1.05); table below",
    )
    table = [
        "| B | r | stock step s | scoring s | train on k s | selection step s | over floor | vs stock "
        "| random step s (no scoring) | / stock |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        table.append(
            f"| {r['batch']} | {r['ratio']} | {float(r['stock_step']):.4f} | {float(r['scoring_pass']):.4f} | "
            f"{float(r['train_step_k']):.4f} | {float(r['selection_step']):.4f} | "
            f"{float(r['overhead_over_floor']):.3f} | {float(r['vs_stock']):.3f} | "
            f"{float(r['random_step']):.4f} | {float(r['random_vs_stock']):.3f} |"
        )
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--budget",
        type=float,
        default=480,
        help="Seconds for all checks; a check that would start later is skipped (default: 480).",
    )
    p.add_argument("--work", default=None, help="Folder for data and runs (default: a temporary one, removed).")
    p.add_argument("--probe", choices=("sync",), default=None, help=argparse.SUPPRESS)  # one check's own process
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing checked "
            f"(exit status {NO_CUDA})"
        )
        return NO_CUDA
    if args.probe == "sync":
        return sync_probe()
    gpus = torch.cuda.device_count()
    verdicts = Verdicts(args.budget)
    print(
        f"gpu-check: {gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, budget {args.budget:.0f} s",
        flush=True,
    )
    work = args.work or tempfile.mkdtemp(prefix="gpu-check-")
    table = []
    try:
        table = run_checks(verdicts, work, gpus)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for line in table:
        print("    " + line)
    return 1 if verdicts.failed() else 0


def run_checks(verdicts, work, gpus):
    py = sys.executable
    result = verdicts.run(
        "cuda-tests",
        [py, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", os.path.join(REPO, "tests")],
        150,
        cwd=REPO,
    )
    if result is not None:
        verdicts.say("PASS", "cuda-tests", result.stdout.strip().splitlines()[-1])

    result = verdicts.run(
        "make-data",
        [
            py,
            "-m",
            "open_clip_dissect.cli",
            "make-data",
            "--out",
            os.path.join(work, "data"),
            "--train-size",
            "2048",
            "--val-size",
            "256",
            "--shard-size",
            "256",
            "--seed",
            "0",
            "--workers",
            "4",
            "--quiet",
        ],
        120,
    )
    if result is None:
        return bench_table(verdicts, work)
    with open(os.path.join(work, "data", "manifest.json")) as f:
        splits = json.load(f)["splits"]
    data = {"train": splits["train"]["pattern"], "val": splits["val"]["pattern"]}
    logs = os.path.join(work, "logs")
    main_module = [py, "-m", "open_clip_dissect.main"]
    check_run(verdicts, "amp", main_module + train_flags(data, logs, "amp", "--precision", "amp"), logs, "amp", 90)
    if torch_bf16():
        check_run(
            verdicts,
            "amp_bf16",
            main_module + train_flags(data, logs, "bf16", "--precision", "amp_bf16"),
            logs,
            "bf16",
            90,
        )
    else:
        verdicts.say("SKIP", "amp_bf16", "this GPU has no bfloat16")
    check_run(
        verdicts,
        "torchcompile",
        main_module + train_flags(data, logs, "compile", "--precision", "amp", "--torchcompile"),
        logs,
        "compile",
        180,
    )

    determinism_check(verdicts, main_module, data, logs)

    result = verdicts.run("sync-debug", [py, os.path.abspath(__file__), "--probe", "sync"], 90)
    if result is not None:
        syncs, steps, *sites = result.stdout.strip().splitlines()[-1].split()
        verdicts.say(
            "PASS" if syncs == "0" else "WARN",
            "sync-debug",
            f"{syncs} synchronizing CUDA calls in {steps} selection steps"
            + (f" ({', '.join(sites)})" if sites else ""),
        )

    if gpus >= 2:
        run = [
            py,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "open_clip_dissect.main",
            "--",
        ]
        for scope in ("local", "global"):
            name = f"nccl-{scope}"
            check_run(
                verdicts,
                name,
                run + train_flags(data, logs, name, "--precision", "amp", "--selection-scope", scope),
                logs,
                name,
                120,
            )
    else:
        verdicts.say("SKIP", "nccl-local", f"needs 2 GPUs, {gpus} visible")
        verdicts.say("SKIP", "nccl-global", f"needs 2 GPUs, {gpus} visible")
    return bench_table(verdicts, work)


def torch_bf16() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


if __name__ == "__main__":
    sys.exit(main())
