"""What every benchmark shares (``scripts/bench.py`` too): synthetic data sets cached by the generator's arguments, and
reading a finished run's results.

A data set lives in ``<root>/data/<name>-<digest>/``, the digest taken over every argument of
``synthetic.make_dataset`` that changes the bytes, so that a changed preset or size can never be
read from an old cache.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(REPO, "src")
if SOURCE not in sys.path:  # this checkout's code, also in the benchmark's own process
    sys.path.insert(0, SOURCE)

from open_clip_dissect import synthetic  # noqa: E402


def data_arguments(
    train, test, seed, noise_rate=0.4, noise_kind="shuffle", val=0, preset=None, test_captions=5, **difficulty
):
    """The generator's arguments: the preset's values, then ``noise_*`` and ``difficulty`` (not None)."""
    given = dict(
        difficulty, noise_rate=noise_rate if preset is None else None, noise_kind=noise_kind if preset is None else None
    )
    settings = synthetic.resolve_settings(preset, **given)
    return dict(
        train_size=train,
        val_size=val,
        test_size=test,
        test_captions=test_captions,
        seed=seed,
        noise_rate=settings.pop("noise_rate"),
        noise_kind=settings.pop("noise_kind"),
        preset=preset,
        difficulty=settings,
    )


def data_digest(arguments):
    return hashlib.sha256(json.dumps(arguments, sort_keys=True).encode()).hexdigest()[:10]


def make_data(root, name, arguments, workers=1):
    """The data set of ``arguments`` (``data_arguments``), written once and then read from the cache."""
    out = os.path.join(root, "data", f"{name}-{data_digest(arguments)}")
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.isfile(manifest_path):
        with open(manifest_path) as f:
            return json.load(f)
    kwargs = dict(arguments)
    difficulty = synthetic.Difficulty(**kwargs.pop("difficulty"))
    return synthetic.make_dataset(
        out,
        shard_size=max(64, arguments["train_size"] // 8),
        workers=workers,
        progress=False,
        difficulty=difficulty,
        **kwargs,
    )


def run_env(threads=1):
    """The environment of one benchmark run: this checkout's ``src`` first on the path (so that
    a benchmark started from a frozen worktree runs that worktree's code, whatever the venv's
    editable install points at), ``threads`` compute threads, no wandb."""
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": SOURCE + (os.pathsep + path if path else ""),
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }


def run_command(cmd, env):
    """Run a command to its end: its return code, output and the CPU seconds it and the
    processes it waited for (its data loader workers) used. CPU time, unlike wall-clock, does not
    count the time the run was paused or waited for a busy core. (The test suite swaps in a
    runner that forks an interpreter which has already imported torch.)"""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        return SimpleNamespace(
            returncode=process.returncode,
            stdout=out.read(),
            stderr=err.read(),
            cpu_seconds=usage.ru_utime + usage.ru_stime,
        )


def run_training(name, cmd, env):
    """Run one benchmark run's training command and return its CPU seconds (``None`` when the
    runner does not measure them); a failure raises, naming the run, with the end of its output."""
    result = run_command(cmd, env)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return getattr(result, "cpu_seconds", None)


def code_version():
    """The commit the benchmark runs (``-dirty`` when the tree has changes), recorded in every run
    so that a cached result names the code that made it; ``None`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def read_run(run_dir):
    """(evaluation records per epoch, selection.jsonl rows, early-learning log lines) of a finished run."""
    from open_clip_dissect.cli import read_results, read_selection

    events = []
    with open(os.path.join(run_dir, "out.log")) as f:
        events = [line.split("| INFO | ", 1)[-1].strip() for line in f if "early-learning point detected" in line]
    selection_path = os.path.join(run_dir, "selection.jsonl")
    return read_results(run_dir), read_selection(run_dir) if os.path.isfile(selection_path) else [], events


def cpu_kernels(run_dir):
    """The CPU kernels a run computed with, from its log (``AVX2``, ``AVX512``, ...; None if the
    run predates the line): runs from hosts with other kernels differ in their last digits."""
    with open(os.path.join(run_dir, "out.log")) as f:
        for line in f:
            if "CPU kernels" in line:
                return line.split("CPU kernels", 1)[1].lstrip(": ").split()[0]
    return None


def training_command(
    model, batch, lr, warmup, seed, epochs, manifest, logs, name, strategy, precision="fp32", workers=1, val_every=None
):
    """``python -m open_clip_dissect.main`` on a data set's train split, reporting retrieval on its
    test split; the benchmarks add their strategy's own flags."""
    cmd = [sys.executable, "-m", "open_clip_dissect.main", "--model", model, "--precision", precision,
           "--batch-size", str(batch), "--lr", str(lr), "--warmup", str(warmup), "--seed", str(seed),
           "--workers", str(workers), "--epochs", str(epochs), "--dataset-type", "webdataset",
           "--train-data", manifest["splits"]["train"]["pattern"],
           "--retrieval-data", manifest["splits"]["test"]["pattern"],
           "--logs", logs, "--name", name, "--save-frequency", "0", "--log-every-n-steps", "1000",
           "--selection", strategy]  # fmt: skip
    return cmd + (["--val-frequency", str(val_every)] if val_every else [])
