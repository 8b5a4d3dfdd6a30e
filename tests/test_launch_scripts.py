"""The launch scripts themselves, run by bash with stub ``srun``, ``scontrol`` and ``torchrun``
on PATH that record their arguments and environment (a real SLURM: ``make slurm-test``)."""

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # trains or launches processes: not in make test-fast

SBATCH = os.path.join(REPO, "scripts", "slurm", "train_multinode.sbatch")
TORCHRUN = os.path.join(REPO, "scripts", "slurm", "train_torchrun.sh")
DOCUMENTED_DATA = "/data/cc3m/{00000..00331}.tar"  # the default docs/cluster.md and the scripts name

# Each stub writes its arguments and environment NUL-separated to $STUB_RECORD/<name>.{args,env}.
RECORDER = """#!/bin/bash
printf '%s\\0' "$@" > "$STUB_RECORD/$(basename "$0").args"
env -0 > "$STUB_RECORD/$(basename "$0").env"
"""
# srun that starts two tasks of one node here. CONFINE=1: the cluster binds each task to its GPU,
# which the task then sees as its only device (CUDA_VISIBLE_DEVICES holding one id); otherwise
# each task sees the node's 8 GPUs. tests/fake_cuda makes torch believe it (FAKE_CUDA_RECORD).
TASKS = """#!/bin/bash
while [ "${1#--}" != "$1" ]; do shift; done  # srun's own options
[ "$1" = python ] && shift && set -- "$STUB_PYTHON" "$@"
for rank in 0 1; do
    visible=0,1,2,3,4,5,6,7
    [ "$CONFINE" = 1 ] && visible=$rank
    SLURM_PROCID=$rank SLURM_LOCALID=$rank SLURM_NTASKS=2 CUDA_VISIBLE_DEVICES=$visible \
        "$@" > "$STUB_RECORD/task$rank.log" 2>&1 &
done
status=0
for task in $(jobs -p); do wait "$task" || status=1; done
exit $status
"""
FAKE_CUDA = os.path.join(REPO, "tests", "fake_cuda")
SCONTROL = """#!/bin/bash
[ "$1 $2" = "show hostnames" ] || exit 2
printf '%s\\n' node-a node-b
"""


@pytest.fixture
def stubs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", RECORDER), ("torchrun", RECORDER), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run_script(script, stubs, tmp_path, args=(), **env):
    """Run ``bash script args`` in a fresh folder with the stubs first on PATH; return what the
    launcher (srun or torchrun) received: its argument list and its environment."""
    record = tmp_path / f"record{len(list(tmp_path.glob('record*')))}"
    record.mkdir()
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLURM_") and k not in ("DATA", "MASTER_PORT", "RUN_NAME", "NPROC")
    }
    full_env = {**clean, "PATH": f"{stubs}:{os.environ['PATH']}", "STUB_RECORD": str(record), **env}
    subprocess.run(
        ["bash", script, *args], cwd=record, env=full_env, check=True, capture_output=True, text=True, timeout=60
    )
    launcher = "srun" if script == SBATCH else "torchrun"
    argv = (record / f"{launcher}.args").read_text().split("\0")[:-1]
    environ = dict(item.split("=", 1) for item in (record / f"{launcher}.env").read_text().split("\0")[:-1])
    return argv, environ


def slurm_job(job_id, name="dissect"):
    return {"SLURM_JOB_ID": str(job_id), "SLURM_JOB_NAME": name, "SLURM_JOB_NODELIST": "node-[a-b]"}


def flag(argv, name):
    """The value of the last ``name`` (argparse: a later flag wins)."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == name][-1]


def test_data_default_is_the_documented_pattern_and_a_set_value_passes_unchanged(stubs, tmp_path):
    with open(os.path.join(REPO, "docs", "cluster.md")) as f:
        assert DOCUMENTED_DATA in f.read()
    for script, env in ((SBATCH, slurm_job(7)), (TORCHRUN, {})):
        argv, _ = run_script(script, stubs, tmp_path, **env)
        assert flag(argv, "--train-data") == DOCUMENTED_DATA
        for value in ("/shared/my data/{000..099}.tar", "/a/{0..9}.tar::/b/x.tar", "s3://b/{a,b}.tar"):
            argv, _ = run_script(script, stubs, tmp_path, DATA=value, **env)
            assert flag(argv, "--train-data") == value


def test_sbatch_launches_through_srun_with_a_port_per_job(stubs, tmp_path):
    argv, environ = run_script(SBATCH, stubs, tmp_path, **slurm_job(41))
    assert argv[: argv.index("python")] == ["--kill-on-bad-exit=1", "--cpu-bind=v", "--accel-bind=gn"]
    assert argv[argv.index("python") :][:4] == ["python", "-u", "-m", "open_clip_dissect.main"]
    assert flag(argv, "--resume") == "latest" and flag(argv, "--save-frequency") == "1"
    assert environ["MASTER_ADDR"] == "node-a"
    ports = {run_script(SBATCH, stubs, tmp_path, **slurm_job(job))[1]["MASTER_PORT"] for job in (41, 42, 99999)}
    assert len(ports) == 3 and all(1024 < int(p) < 32768 for p in ports)  # below Linux's ephemeral range
    assert environ["MASTER_PORT"] == run_script(SBATCH, stubs, tmp_path, **slurm_job(41))[1]["MASTER_PORT"]
    _, environ = run_script(SBATCH, stubs, tmp_path, MASTER_PORT="23456", **slurm_job(41))
    assert environ["MASTER_PORT"] == "23456"


def test_a_resubmission_keeps_the_run_name(stubs, tmp_path):
    first, _ = run_script(SBATCH, stubs, tmp_path, **slurm_job(100))
    again, _ = run_script(SBATCH, stubs, tmp_path, **slurm_job(2345))  # a new job ID
    name = flag(first, "--name")
    assert re.fullmatch(r"dissect-[0-9a-f]{8}", name) and flag(again, "--name") == name
    other, _ = run_script(SBATCH, stubs, tmp_path, args=["--ratio", "0.3"], **slurm_job(2346))
    assert flag(other, "--ratio") == "0.3" and flag(other, "--name") not in (name, None)
    renamed, _ = run_script(SBATCH, stubs, tmp_path, **slurm_job(2347, name="my run"))
    assert flag(renamed, "--name") == "my_run-" + name.split("-")[1]
    chosen, _ = run_script(SBATCH, stubs, tmp_path, args=["--ratio", "0.3"], RUN_NAME="mine", **slurm_job(2348))
    assert flag(chosen, "--name") == "mine"

    once, _ = run_script(TORCHRUN, stubs, tmp_path)
    twice, _ = run_script(TORCHRUN, stubs, tmp_path, NPROC="2")
    assert flag(once, "--name") == flag(twice, "--name") and flag(once, "--resume") == "latest"
    assert twice[:5] == ["--standalone", "--nproc_per_node", "2", "-m", "open_clip_dissect.main"]
    assert twice[5] == "--"


def test_sbatch_header_requeues_and_appends(stubs):
    with open(SBATCH) as f:
        header = [line.strip() for line in f if line.startswith("#SBATCH")]
    assert "#SBATCH --requeue" in header and "#SBATCH --open-mode=append" in header
    assert "#SBATCH --output=logs/%x_%j.out" in header


@pytest.mark.parametrize("confined, devices", [(True, ["cuda", "cuda"]), (False, ["cuda:0", "cuda:1"])])
def test_sbatch_tasks_find_their_gpu_whether_or_not_the_cluster_confines_them(
    stubs, tmp_path, confined, devices, tiny_data
):
    """With --accel-bind=g a cluster that confines each task to its bound GPU shows every task
    one device, cuda:0: asking for cuda:<local rank> fails on ranks 1+ ("invalid device
    ordinal"). The tasks get as far as OpenCLIP's device set-up (tests/fake_cuda stops them)."""
    (stubs / "srun").write_text(TASKS)
    record = tmp_path / "record"
    record.mkdir()
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLURM_")
        and k not in ("DATA", "MASTER_PORT", "RUN_NAME", "CUDA_VISIBLE_DEVICES", "WORLD_SIZE", "LOCAL_RANK", "RANK")
    }
    # DATA: shards that exist (the entry point checks the files before OpenCLIP's device set-up)
    env = {
        **clean,
        **slurm_job(5),
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "STUB_RECORD": str(record),
        "DATA": tiny_data.train,
        "STUB_PYTHON": sys.executable,
        "FAKE_CUDA_RECORD": str(record),
        "CONFINE": "1" if confined else "0",
        "PYTHONPATH": os.pathsep.join(p for p in (FAKE_CUDA, os.environ.get("PYTHONPATH")) if p),
    }
    result = subprocess.run(
        ["bash", SBATCH, "--workers", "1", "--train-num-samples", "512"],
        cwd=record,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # a later flag wins: 4 tiny shards feed one worker, and their 512 pairs are the epoch
    logs = "\n".join(
        (record / f"task{r}.log").read_text()[-2000:] for r in (0, 1) if (record / f"task{r}.log").exists()
    )
    assert result.returncode == 0, result.stderr[-2000:] + logs
    assert [(record / f"rank{r}.device").read_text() for r in (0, 1)] == devices
