"""The paper's Table 1 recipe (scripts/reproduce/), dry-run: every command it would launch is
recorded by stubs and parsed by our own parsers, so the recipe cannot drift from the flags."""

import os
import subprocess

import pytest
from conftest import REPO
from test_launch_scripts import RECORDER, SCONTROL

from open_clip_dissect import cli, synthetic
from open_clip_dissect.openclip.launch import params

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast

TABLE1 = os.path.join(REPO, "scripts", "reproduce", "cc3m_table1.sbatch")
EVAL = os.path.join(REPO, "scripts", "reproduce", "cc3m_eval.sh")
RUNS = [("none", 1.0)] + [(s, r) for s in ("random", "dissect-warmup", "dissect-mome") for r in (0.3, 0.5, 0.7)]
# Appends one NUL-separated argument list per call.
APPENDER = """#!/bin/bash
printf '%s\\0' "$@" >> "$STUB_RECORD/$(basename "$0").calls"
printf '\\n' >> "$STUB_RECORD/$(basename "$0").calls"
"""


@pytest.fixture
def stub_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", APPENDER), ("open-clip-dissect", APPENDER), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    assert "STUB_RECORD" in RECORDER  # the same stub convention as test_launch_scripts
    return bin_dir


def run(script, stub_bin, tmp_path, args=(), **env):
    """The calls each stub received: {stub name: [argv, ...]}."""
    record = tmp_path / f"record{len(list(tmp_path.glob('record*')))}"
    record.mkdir()
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLURM_") and k not in ("DATA", "RUN_NAME", "BENCHMARK_ROOT", "COCO_ROOT", "FLICKR_ROOT")
    }
    full_env = {**clean, "PATH": f"{stub_bin}:{os.environ['PATH']}", "STUB_RECORD": str(record), "REPO": REPO, **env}
    subprocess.run(
        ["bash", script, *args], cwd=record, env=full_env, check=True, capture_output=True, text=True, timeout=60
    )
    calls = {}
    for path in record.glob("*.calls"):
        lines = path.read_text().split("\0\n")[:-1]
        calls[path.name[: -len(".calls")]] = [line.split("\0") for line in lines]
    return calls


def training_args(argv):
    return params.parse_args(argv[argv.index("open_clip_dissect.main") + 1 :])


@pytest.fixture
def benchmark_root(tmp_path):
    """Tiny COCO and Flickr layouts, so that --retrieval-benchmark passes its start-up check."""
    samples = synthetic.make_samples("test", 4, 0, captions_per_image=2)
    synthetic.write_coco_layout(str(tmp_path / "sets" / "mscoco_captions"), samples)
    synthetic.write_flickr_layout(str(tmp_path / "sets" / "flickr30k"), samples)
    return str(tmp_path / "sets")


def test_table1_runs_parse_with_the_papers_settings(stub_bin, tmp_path):
    with open(TABLE1) as f:
        header = [line.strip() for line in f if line.startswith("#SBATCH")]
    assert "#SBATCH --array=0-9" in header and "#SBATCH --ntasks-per-node=8" in header
    assert "#SBATCH --gpus-per-node=8" in header and "#SBATCH --nodes=1" in header
    names = set()
    for index, (selection, ratio) in enumerate(RUNS):
        (argv,) = run(
            TABLE1,
            stub_bin,
            tmp_path,
            SLURM_JOB_ID=str(500 + index),
            SLURM_ARRAY_TASK_ID=str(index),
            SLURM_JOB_NAME="cc3m-table1",
            SLURM_JOB_NODELIST="node-a",
        )["srun"]
        args = training_args(argv)
        assert (args.model, args.batch_size, args.epochs, args.precision) == ("RN50", 1024, 40, "amp")
        assert (args.lr, args.beta1, args.beta2, args.eps, args.wd) == (5e-4, 0.9, 0.999, 1e-8, 0.2)
        assert (args.warmup, args.lr_scheduler, args.opt) == (10000, "cosine", "adamw")
        assert (args.selection, args.ratio) == (selection, ratio)
        # the authors' code scores in train mode (BatchNorm on the candidate batch's statistics)
        assert args.selection_scoring_mode == ("eval" if selection == "none" else "train")
        if selection == "dissect-warmup":
            assert args.dissect_warmup_epochs == 10
        assert args.train_data == "/data/cc3m/{00000..00331}.tar" and args.resume == "latest"
        assert args.retrieval_benchmark is None
        names.add(args.name)
    assert len(names) == len(RUNS) and "cc3m-full" in names and "cc3m-dissect-mome-r0.3" in names
    # The authors' script's values as a variant: the flags win, the run gets a name of its own.
    (argv,) = run(
        TABLE1,
        stub_bin,
        tmp_path,
        args=["--batch-size", "1280", "--lr", "2e-3", "--wd", "0.1"],
        SLURM_JOB_ID="9",
        SLURM_ARRAY_TASK_ID="4",
        SLURM_JOB_NAME="cc3m-table1",
        SLURM_JOB_NODELIST="node-a",
    )["srun"]
    args = training_args(argv)
    assert (args.batch_size, args.lr, args.wd, args.selection, args.ratio) == (1280, 2e-3, 0.1, "dissect-warmup", 0.3)
    assert args.name.startswith("cc3m-dissect-warmup-r0.3-") and args.name not in names


def test_table1_with_benchmarks_during_training(stub_bin, tmp_path, benchmark_root):
    (argv,) = run(
        TABLE1,
        stub_bin,
        tmp_path,
        SLURM_JOB_ID="7",
        SLURM_ARRAY_TASK_ID="5",
        SLURM_JOB_NAME="t",
        SLURM_JOB_NODELIST="node-a",
        BENCHMARK_ROOT=benchmark_root,
    )["srun"]
    args = training_args(argv)
    assert args.retrieval_benchmark == "mscoco_captions,flickr30k" and args.benchmark_root == benchmark_root
    assert args.val_frequency == 5


def test_eval_script_evaluates_every_final_checkpoint_and_prints_the_table(stub_bin, tmp_path):
    logs = tmp_path / "logs"
    for run_name in ("cc3m-full", "cc3m-random-r0.3", "cc3m-dissect-mome-r0.5"):
        (logs / run_name / "checkpoints").mkdir(parents=True)
        (logs / run_name / "checkpoints" / "epoch_40.pt").write_bytes(b"")
    (logs / "cc3m-unfinished" / "checkpoints").mkdir(parents=True)
    calls = run(EVAL, stub_bin, tmp_path, args=[str(logs)], COCO_ROOT="/data/coco", FLICKR_ROOT="/data/f30k")
    evals = [cli.eval_parser().parse_args(argv[1:]) for argv in calls["open-clip-dissect"] if argv[0] == "eval"]
    assert sorted(
        (os.path.basename(os.path.dirname(os.path.dirname(e.checkpoint))), e.benchmark, e.dataset_root) for e in evals
    ) == sorted(
        (name, benchmark, root)
        for name in ("cc3m-full", "cc3m-random-r0.3", "cc3m-dissect-mome-r0.5")
        for benchmark, root in (("mscoco_captions", "/data/coco"), ("flickr30k", "/data/f30k"))
    )
    assert all(e.model == "RN50" and e.precision == "amp" and e.out is None for e in evals)
    (summary,) = [argv for argv in calls["open-clip-dissect"] if argv[0] == "summary"]
    parsed = cli.summary_parser().parse_args(summary[1:])
    assert parsed.table and len(parsed.run_dirs) == 4


def test_table1_states_where_lr_and_wd_differ_from_the_authors_script():
    with open(TABLE1) as f:
        script = f.read()
    with open(os.path.join(REPO, "docs", "reproduce.md")) as f:
        page = f.read()
    for text in (script, page):
        assert "lr 2e-3" in text and "wd 0.1" in text and "lr 5e-4" in text and "wd 0.2" in text
        assert "--selection-scoring-mode train" in text or "train mode" in text
