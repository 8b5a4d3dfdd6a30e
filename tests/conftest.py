import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from types import SimpleNamespace

# Each xdist worker computes with its share of the cores: two workers of two compute threads
# each on two cores spend about twice the CPU on the same training (threads spin waiting for one
# another). Set before torch is imported, here and in every process a test starts.
_THREADS = str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, _THREADS)

import multiprocessing  # noqa: E402
import multiprocessing.forkserver  # noqa: E402
import runpy  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

import forked_entry_points  # noqa: E402
import pytest  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from filelock import FileLock  # noqa: E402

from open_clip_dissect import synthetic  # noqa: E402
from open_clip_dissect.openclip.models.configs import register_model_configs  # noqa: E402

register_model_configs()  # in-process tests build the tiny models (the entry points do this themselves)


def pytest_configure(config):
    # xdist's `load` schedule hands each worker its first quarter of tests in one block, so the
    # longest tests, sorted first, all landed on one worker, which ran for minutes after the other
    # had finished. One test at a time (xdist keeps two queued per worker) keeps both busy.
    if getattr(config.option, "maxschedchunk", 0) is None:
        config.option.maxschedchunk = 1
    # here, not in setup.cfg: a change there would make every `make` target reinstall the venv
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA device; skipped without one (make gpu-check runs them: pytest -m cuda)"
    )
    config.addinivalue_line(
        "markers", "slow: trains a model or launches processes; make test-fast (pytest -m 'not slow') leaves it out"
    )


# The longest tests, longest first (measured with --durations): started first, so that the two
# workers of `make test` end together on short tests instead of one waiting for a long one
# (with the one-at-a-time schedule of pytest_configure).
LONGEST_FIRST = (  # `pytest -n 2` of 2026-12-03 (one test at a time), nothing else running
    "test_repeatable.py::test_repeats_agree_every_time",  # 22 short runs
    "test_web_bench.py::test_web_profile_on_a_tiny_design",
    "test_distributed.py",
    "test_bench.py::test_paper_profile_on_a_tiny_design",
    "test_bench.py::test_bench_smoke_profile",
    "test_coreset.py::test_the_trained_oracle_offline_and_online",  # trains the oracle
    "test_fork_patch.py::test_patched_fork_trains_one_epoch_with_selection",
    "test_data.py::test_the_training_pipeline_runs_in_spawned_workers",
    "test_strategy_plugin.py::test_a_strategy_file_alone_adds_a_strategy",
    "test_crash_resume.py::test_killed_three_times_resumes_exactly",
    "test_security.py::test_patched_fork_loader_ignores_pickled_members",
    "test_train_selection.py::test_resume_selects_exactly_as_an_uninterrupted_run",
    "test_train.py::test_selection_none_is_stock_openclip",
    "test_train_selection.py::test_auto_warmup_detects_once_and_resumes_exactly",
    "test_launch_scripts.py::test_sbatch_tasks_find_their_gpu_whether_or_not_the_cluster_confines_them",
)


def _start_order(item):
    name = item.nodeid.split("/")[-1]
    for rank, prefix in enumerate(LONGEST_FIRST):
        if name.startswith(prefix):
            return rank
    return len(LONGEST_FIRST) + (0 if "slow" in item.keywords else 1)


def pytest_collection_modifyitems(config, items):
    """Longest tests first (a stable sort: the same order on every xdist worker); tests marked
    ``cuda`` are skipped where CUDA is not (``make gpu-check`` runs them)."""
    items.sort(key=_start_order)
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (make gpu-check)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
TINY = "dissect-vit-micro"  # half the step cost of dissect-vit-tiny; tests that need learning use that
# The smallest useful training command on CPU; tests add data, logs and name.
TINY_TRAIN_FLAGS = [
    "--model",
    TINY,
    "--precision",
    "fp32",
    "--batch-size",
    "32",
    "--lr",
    "1e-3",
    "--warmup",
    "2",
    "--seed",
    "0",
    "--log-every-n-steps",
    "1",
]


def built_once(tmp_path_factory, name, build):
    """``build(folder)``'s JSON result, built once per test session however many xdist workers
    ask for it: the first builds under a file lock, the others wait and read what it wrote."""
    base = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        base = base.parent  # the session's folder, above each worker's own
    folder = base / f"built-once-{name}"
    with FileLock(f"{folder}.lock"):
        done = base / f"built-once-{name}.json"
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            done.write_text(json.dumps(build(str(folder))))
        return json.loads(done.read_text())


def _tiny_data(out):
    return out, synthetic.make_dataset(
        out,
        train_size=512,
        val_size=64,
        seed=0,
        noise_rate=0.4,
        noise_kind="shuffle",
        shard_size=128,
        csv=True,
        progress=False,
        test_size=32,
        test_captions=3,
    )


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """512 noisy training pairs in 4 shards (+ CSV), 64 clean validation pairs, 32 retrieval
    test images with 3 captions each."""
    root, manifest = built_once(tmp_path_factory, "tiny-data", _tiny_data)
    splits = manifest["splits"]
    return SimpleNamespace(
        root=root,
        train=splits["train"]["pattern"],
        val=splits["val"]["pattern"],
        test=splits["test"]["pattern"],
        test_csv=splits["test"]["csv"],
        train_csv=splits["train"]["csv"],
        val_csv=splits["val"]["csv"],
        manifest=manifest,
    )


def _two_rank_data(out):
    return synthetic.make_dataset(
        out, train_size=256, val_size=0, seed=0, noise_rate=0.4, noise_kind="shuffle", shard_size=64, progress=False
    )


@pytest.fixture(scope="session")
def two_rank_data(tmp_path_factory):
    """256 noisy pairs in 4 shards of 64: two shards a rank, four steps of 32 a rank and epoch."""
    manifest = built_once(tmp_path_factory, "two-rank-data", _two_rank_data)
    return SimpleNamespace(train=manifest["splits"]["train"]["pattern"])


def _one_shard_data(out):
    return synthetic.make_dataset(
        out, train_size=128, val_size=0, seed=0, noise_rate=0.4, shard_size=128, progress=False
    )


@pytest.fixture(scope="session")
def one_shard_data(tmp_path_factory):
    """128 pairs in one shard, 40% shuffled: four steps of 32 per epoch, enough to show that a
    strategy runs through every part of the adapter (what it selects is tested in core)."""
    manifest = built_once(tmp_path_factory, "one-shard", _one_shard_data)
    return SimpleNamespace(train=manifest["splits"]["train"]["pattern"], noisy=round(0.4 * 128))


def _oracle(root):
    manifest = synthetic.make_dataset(
        os.path.join(root, "clean"), train_size=1024, val_size=0, seed=7, noise_rate=0.0, shard_size=512, progress=False
    )
    flags = [
        *TINY_TRAIN_FLAGS,
        "--train-data",
        manifest["splits"]["train"]["pattern"],
        "--dataset-type",
        "webdataset",
        "--workers",
        "1",
        "--batch-size",
        "64",
        "--epochs",
        "3",
        "--warmup",
        "10",  # (a 2-step warm-up can collapse clean-data runs)
        "--logs",
        root,
        "--name",
        "oracle",
    ]  # measured: CLIPScore AUROC 0.93 on tiny_data's clean vs shuffled pairs (the tests ask 0.75)
    result = run_module("open_clip_dissect.main", flags)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return os.path.join(root, "oracle", "checkpoints", "epoch_3.pt")


@pytest.fixture(scope="session")
def oracle(tmp_path_factory):
    """A micro CLIP (``TINY``) trained on 1024 clean pairs: the 'pretrained oracle' of the tests."""
    return built_once(tmp_path_factory, "oracle", _oracle)


def shard_training_flags(data, logs):
    """``TINY_TRAIN_FLAGS`` on ``data``'s training shards (one loader worker), logging to ``logs``."""
    flags = ["--train-data", data.train, "--dataset-type", "webdataset", "--workers", "1", "--logs", str(logs)]
    return [*TINY_TRAIN_FLAGS, *flags]


def two_rank_flags(data, logs):
    """dissect-mome (r = 0.5) on ``data``'s shards, for 2 ranks."""
    return [*shard_training_flags(data, logs), "--selection", "dissect-mome", "--ratio", "0.5"]


def torchrun(nproc, args, timeout=900, env=None):
    """``torchrun --standalone --nproc_per_node nproc -m open_clip_dissect.main args``: torchrun
    itself, not ranks forked as ``run_ranks`` does."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd += ["-m", "open_clip_dissect.main", "--", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def two_rank_dissect_run(two_rank_data, tmp_path_factory):
    """2 epochs of ``two_rank_flags`` through torchrun itself, uninterrupted, with
    ``--selection-record LOGS/records``: its logs folder (once for all test workers). The forked
    multi-rank runs of test_distributed must equal it; test_rank_audit reads its records."""

    def build(logs):
        records = os.path.join(logs, "records")
        flags = [*two_rank_flags(two_rank_data, logs), "--name", "two", "--epochs", "2", "--selection-record", records]
        result = torchrun(2, flags)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        return os.path.join(logs, "two")

    return pathlib.Path(built_once(tmp_path_factory, "two-rank-dissect-run", build))


# Entry points that run in a fork of the session's server, which imported torch and OpenCLIP
# once (about 7 s of CPU saved per run). Environment variables these runs may set: read at run
# time, not at import (thread counts need a fresh interpreter), and PYTHONPATH where the fork can
# import from it (``forked_entry_points.reimportable``; a module it provides also runs forked).
FORKED_MODULES = ("open_clip_dissect.main", "open_clip_dissect.cli", "stock_openclip")  # (tests/stock_openclip.py)
FORK_SAFE_ENV = {"WANDB_DIR", "WANDB_MODE", "OPEN_CLIP_DISSECT_KILL_AT"}


def run_module(module, args, cwd=None, timeout=600, env=None, fresh=False):
    """Run ``python -m module args`` and return its ``(returncode, stdout, stderr)``: in a fresh
    interpreter when ``fresh`` is set or the module or ``env`` need one, else in a fork of the
    session's entry-point server, which behaves alike."""
    fresh = fresh or os.environ.get("DISSECT_TESTS_FRESH") == "1"  # to rule the fork out when debugging
    env = env or {}
    path = env.get("PYTHONPATH", "")
    forkable = module in FORKED_MODULES or module.split(".")[0] in forked_entry_points.provided_names(path)
    if not fresh and forkable and set(env) - {"PYTHONPATH"} <= FORK_SAFE_ENV and forked_entry_points.reimportable(path):
        return forked_entry_points.shared().run(module, args, cwd=cwd or os.getcwd(), timeout=timeout, env=env)
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **env}
    if os.path.isfile(os.path.join(TESTS, f"{module}.py")):  # an entry point of the tests' own
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS, full_env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


# Processes of several ranks fork from multiprocessing's forkserver: one process per test worker
# that imported torch and OpenCLIP once and never computes (no thread of it runs when a rank is
# forked). A spawned rank imports them again: seconds of CPU each.
multiprocessing.set_forkserver_preload(list(forked_entry_points.PRELOAD))


def ensure_forkserver():
    """Start the forkserver if it is not running: torch and OpenCLIP imported with one thread."""
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if threads is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = threads


def start_ranks(worker, args, nprocs, join=True):
    """``worker(rank, *args)`` in ``nprocs`` processes (``torch.multiprocessing.start_processes``
    from the forkserver): with ``join``, the first rank to fail ends the others and raises."""
    # The ranks compute as torchrun's do: torch imported with OMP_NUM_THREADS=1 (torchrun's
    # default for several processes a node). set_num_threads(1) after an import with two threads
    # does not compute the same bit for bit, so the forkserver imports with one.
    ensure_forkserver()
    return mp.start_processes(worker, args=args, nprocs=nprocs, join=join, start_method="forkserver")


def _entry_point_rank(rank, world, port, module, argv, env, folder):
    """One rank of ``run_ranks``: the environment torchrun gives a rank, output in files."""
    # a rank's own processes (data loader workers) start as under torchrun: by fork, not through
    # the forkserver this rank came from (which would unpickle and import for each)
    multiprocessing.set_start_method("fork", force=True)
    os.environ.update(
        env,
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    forked_entry_points.redirect_output(*(os.path.join(folder, f"rank{rank}.{n}") for n in ("stdout", "stderr")))
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _read(path):
    """A rank's output file; empty when the rank ended before it made it."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def run_ranks(nprocs, module, argv, env=None, timeout=600):
    """``torchrun --standalone --nproc_per_node N -m module argv`` as its ranks see it (RANK,
    LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), the ranks started by
    ``start_ranks``. As torchrun does, the first rank to fail ends the others. Returns
    ``(returncode, stdout, stderr)``, the ranks' outputs one after the other; the return code is
    the failed rank's (negative: the signal that ended it), 124 after ``timeout`` seconds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="ranks-")
    args = (nprocs, port, module, list(argv), {"WANDB_MODE": "disabled", **(env or {})}, folder)
    context = start_ranks(_entry_point_rank, args, nprocs, join=False)
    deadline = time.monotonic() + timeout
    returncode, raised = 0, ""
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                for process in context.processes:
                    process.kill()
                    process.join()
                returncode = 124
                break
    except mp.ProcessExitedException as failed:
        returncode = failed.exit_code
    except mp.ProcessRaisedException as failed:  # (an error before the rank's output files)
        returncode, raised = 1, str(failed)
    stdout, stderr = (
        "".join(_read(os.path.join(folder, f"rank{r}.{name}")) for r in range(nprocs)) for name in ("stdout", "stderr")
    )
    shutil.rmtree(folder, ignore_errors=True)
    return subprocess.CompletedProcess([module, *argv], returncode, stdout, stderr + raised)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


LOSS_LINE = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/.*Contrastive_loss: (\S+)")


def train_losses(log_path):
    """``(epoch, samples, loss)`` of every progress line in an OpenCLIP ``out.log``."""
    with open(log_path) as f:
        return [m.groups() for m in map(LOSS_LINE.search, f) if m]


_BENCH_RUNS = threading.Lock()  # the server takes one request at a time; a profile may run two


@pytest.fixture
def forked_bench_runs(monkeypatch):
    """The benchmark scripts' training runs (``scripts/benchmarks/data.run_command``) go to the
    session's entry-point server like the tests' own runs."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from benchmarks import data as bench_data

    def run(cmd, env):
        assert cmd[:3] == [sys.executable, "-m", "open_clip_dissect.main"], cmd[:3]
        with _BENCH_RUNS:  # (PYTHONPATH and thread counts of the run's env: the server has them)
            return run_module(cmd[2], cmd[3:], env={"WANDB_MODE": env.get("WANDB_MODE", "disabled")})

    monkeypatch.setattr(bench_data, "run_command", run)
