"""The jobs of ``make slurm-test`` (started by ``run.sh`` once the cluster is up; SLURM_CONF set).

The shipped sbatch script is copied with only its resource lines changed for 2 CPU tasks on one
node; the tiny experiment (data, model, epochs) is passed as a user would: ``DATA=...`` and
training flags after the script name. Checks, each against an uninterrupted reference job:

1. the reference completes on 2 ranks;
2. ``scontrol requeue`` in the middle of epoch 2: the job comes back under the same ID, keeps the
   first attempt's log, resumes from epoch_1.pt with both ranks' selection state, and ends
   bit-identical (checkpoint and every rank's state file);
3. ``scancel`` in epoch 2, then a fresh ``sbatch`` of the same command: same run, resumed, identical;
4. a truncated ``epoch_3.pt`` in that run, submitted again: skipped with a warning, epoch 3
   trained again from epoch_2.pt, identical.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

import torch

EPOCHS = 3
# 1024 samples, 8 shards: an epoch is 8 steps of 2 x 32 (~8 s here), wide enough to requeue in.
# The experiment, after the script name (a later flag wins over the script's own).
TINY_FLAGS = [
    "--model",
    "dissect-vit-tiny",
    "--precision",
    "fp32",
    "--batch-size",
    "32",
    "--workers",
    "1",
    "--train-num-samples",
    "1024",
    "--epochs",
    str(EPOCHS),
    "--lr",
    "1e-3",
    "--warmup",
    "2",
    "--seed",
    "0",
    "--log-every-n-steps",
    "1",
]
# The resource lines of the shipped script and their CPU versions (None: line dropped).
CPU_RESOURCES = {
    "#SBATCH --nodes=4": "#SBATCH --nodes=1",
    "#SBATCH --ntasks-per-node=8": "#SBATCH --ntasks-per-node=2",
    "#SBATCH --gpus-per-node=8": None,
    "#SBATCH --cpus-per-task=12": "#SBATCH --cpus-per-task=1",
    "#SBATCH --time=24:00:00": "#SBATCH --time=00:15:00",
}
JOB_TIMEOUT = 300
START = float(os.environ.get("SLURM_TEST_START", time.time()))


class Failure(Exception):
    pass


def say(message):
    print(f"slurm-test [{time.time() - START:.0f}s]: {message}", flush=True)


def check(condition, message):
    if not condition:
        raise Failure(message)


def cpu_copy(shipped, out):
    """The shipped script with only the resource lines changed; every one must be there."""
    with open(shipped) as f:
        lines = f.read().split("\n")
    for line, replacement in CPU_RESOURCES.items():
        check(lines.count(line) == 1, f"{shipped}: expected the resource line {line!r} once")
        i = lines.index(line)
        lines[i : i + 1] = [] if replacement is None else [replacement]
    with open(out, "w") as f:
        f.write("\n".join(lines))
    return out


class Cluster:
    def __init__(self, work, script, data):
        self.submit_dir = os.path.join(work, "submit")
        os.makedirs(os.path.join(self.submit_dir, "logs"))  # docs/cluster.md: logs/ must exist
        self.script = cpu_copy(script, os.path.join(work, "train_cpu.sbatch"))
        # The job inherits this environment (sbatch --export=ALL): the venv's python first.
        self.env = {
            **os.environ,
            "DATA": data,
            "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "disabled",
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        }

    def run(self, *cmd):
        result = subprocess.run(cmd, cwd=self.submit_dir, env=self.env, capture_output=True, text=True)
        check(result.returncode == 0, f"{' '.join(cmd)}: {result.stderr.strip()}")
        return result.stdout

    def sbatch(self, job_name):
        """``sbatch --job-name NAME train_cpu.sbatch <tiny flags>`` from the submit folder."""
        job = self.run("sbatch", "--parsable", f"--job-name={job_name}", self.script, *TINY_FLAGS).strip()
        say(f"submitted {job_name} as job {job}")
        return job

    def job(self, job):
        fields = dict(re.findall(r"(\w+)=(\S*)", self.run("scontrol", "show", "job", "--oneliner", job)))
        return fields

    def output(self, job_name, job):
        path = os.path.join(self.submit_dir, "logs", f"{job_name}_{job}.out")
        return open(path).read() if os.path.exists(path) else ""

    def wait(self, job, job_name, until, what, timeout=JOB_TIMEOUT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if until():
                return
            state = self.job(job)["JobState"]
            if state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"):
                raise Failure(
                    f"job {job} ended {state} while waiting for {what}:\n{self.output(job_name, job)[-4000:]}"
                )
            time.sleep(0.5)
        raise Failure(f"job {job}: no {what} within {timeout}s:\n{self.output(job_name, job)[-4000:]}")

    def finish(self, job, job_name):
        """Wait until the job completed with exit code 0; return its SLURM output."""
        self.wait(job, job_name, lambda: self.job(job)["JobState"] == "COMPLETED", "completion")
        fields = self.job(job)
        check(fields["ExitCode"] == "0:0", f"job {job} exit code {fields['ExitCode']}")
        return self.output(job_name, job)

    def run_dir(self, job_name):
        """logs/<job name>-<hash>, relative to the submit folder as OpenCLIP logs it: the one
        run a job name has here (None before it exists, or if there are several)."""
        found = glob.glob(os.path.join(self.submit_dir, "logs", f"{job_name}-*", ""))
        return os.path.relpath(found[0], self.submit_dir) if len(found) == 1 else None


def read(path):
    return open(path).read() if os.path.exists(path) else ""


def checkpoint(run_dir, name):
    return os.path.join(run_dir, "checkpoints", name)


def in_epoch_2(run_dir):
    """epoch_1.pt is written and epoch 2 (OpenCLIP's "Train Epoch: 1") has begun, not ended."""
    if not run_dir:
        return False
    return (
        os.path.exists(checkpoint(run_dir, "epoch_1.pt"))
        and not os.path.exists(checkpoint(run_dir, "epoch_2.pt"))
        and "Train Epoch: 1 [" in read(os.path.join(run_dir, "out.log"))
    )


def same(a, b, where="checkpoint"):
    """Bit-identical nested checkpoint contents (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        check(isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs")
    elif isinstance(a, dict):
        check(isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ")
        for key in a:
            same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        check(type(a) is type(b) and len(a) == len(b), f"{where}: lengths differ")
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        check(a == b, f"{where}: {a!r} != {b!r}")


def identical_to_reference(run_dir, reference):
    """The final checkpoint (but its run name) and both ranks' selection state files."""
    ckpt = lambda d: torch.load(checkpoint(d, f"epoch_{EPOCHS}.pt"), map_location="cpu")  # noqa: E731
    ours, ref = ckpt(run_dir), ckpt(reference)
    ours.pop("name"), ref.pop("name")
    same(ours, ref, f"epoch_{EPOCHS}.pt")
    for rank in range(2):
        name = f"epoch_{EPOCHS}.dissect-state.rank{rank}-of-2"
        load = lambda d: torch.load(checkpoint(d, name), weights_only=False)  # noqa: E731
        same(load(run_dir), load(reference), name)
    leftovers = [n for n in os.listdir(os.path.join(run_dir, "checkpoints")) if ".tmp-" in n]
    check(not leftovers, f"temporary files left in {run_dir}: {leftovers}")


def resumed_from(run_dir, epoch):
    log = read(os.path.join(run_dir, "out.log"))
    ckpt = checkpoint(run_dir, f"epoch_{epoch}.pt")
    check(f"resuming checkpoint '{ckpt}' (epoch {epoch})" in log, f"{run_dir}/out.log: no resume from {ckpt}")
    state = checkpoint(run_dir, f"epoch_{epoch}.dissect-state")
    check(
        f"Selection state of epoch {epoch} restored from 2 rank file(s) of {state}" in log,
        f"{run_dir}/out.log: selection state of epoch {epoch} not restored from 2 rank files",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="The test's temporary folder (required).")
    parser.add_argument("--sbatch", required=True, help="The shipped sbatch script (required).")
    args = parser.parse_args()

    data_dir = os.path.join(args.work, "data")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "open_clip_dissect.cli",
            "make-data",
            "--out",
            data_dir,
            "--train-size",
            "1024",
            "--val-size",
            "0",
            "--shard-size",
            "128",
            "--workers",
            "1",
            "--quiet",
        ],
        check=True,
    )
    with open(os.path.join(data_dir, "manifest.json")) as f:
        data = json.load(f)["splits"]["train"]["pattern"]
    cluster = Cluster(args.work, args.sbatch, data)
    os.chdir(cluster.submit_dir)  # run folders are read by the relative paths OpenCLIP logs
    timings = {}

    # 1. Uninterrupted reference.
    t = time.time()
    job = cluster.sbatch("reference")
    output = cluster.finish(job, "reference")
    reference = cluster.run_dir("reference")
    check(reference is not None, "no run folder logs/reference-<hash>/")
    log = read(os.path.join(reference, "out.log"))
    check(
        "(global: 0, local 0), total 2" in output and "(global: 1, local 1), total 2" in output,
        f"the reference did not run on 2 ranks:\n{output[-4000:]}",
    )
    check(f"Train Epoch: {EPOCHS - 1} [" in log and "resuming checkpoint" not in log, "reference: unexpected log")
    check(output.count(", start 1, run ") == 1, f"reference: unexpected SLURM output:\n{output}")
    timings["reference (uninterrupted)"] = time.time() - t
    say(f"1. reference job {job} completed on 2 ranks: {reference}")

    # 2. scontrol requeue in the middle of epoch 2.
    t = time.time()
    job = cluster.sbatch("requeue")
    cluster.wait(job, "requeue", lambda: in_epoch_2(cluster.run_dir("requeue")), "epoch 2 in flight")
    cluster.run("scontrol", "requeue", job)
    say(f"requeued job {job} during epoch 2")
    output = cluster.finish(job, "requeue")
    check(cluster.job(job)["Restarts"] == "1", f"job {job}: expected 1 restart")
    check(
        ", start 1, run " in output and ", start 2, run " in output,
        f"the first attempt's SLURM output is gone (--open-mode=append):\n{output}",
    )
    run_dir = cluster.run_dir("requeue")
    resumed_from(run_dir, 1)
    identical_to_reference(run_dir, reference)
    timings["requeue mid-epoch"] = time.time() - t
    say(f"2. requeued job {job} resumed from epoch 1 and ended bit-identical to the reference")

    # 3. Cancelled in epoch 2, then the same sbatch command again.
    t = time.time()
    first = cluster.sbatch("resubmit")
    cluster.wait(first, "resubmit", lambda: in_epoch_2(cluster.run_dir("resubmit")), "epoch 2 in flight")
    cluster.run("scancel", first)
    cluster.wait(first, "resubmit", lambda: cluster.job(first)["JobState"] == "CANCELLED", "cancellation", timeout=60)
    second = cluster.sbatch("resubmit")
    cluster.finish(second, "resubmit")
    run_dir = cluster.run_dir("resubmit")  # still one run folder: the resubmission kept the name
    check(run_dir is not None, "the resubmission started a second run folder")
    resumed_from(run_dir, 1)
    identical_to_reference(run_dir, reference)
    timings["cancel + resubmission"] = time.time() - t
    say(f"3. job {first} cancelled in epoch 2; resubmitted as {second}, resumed, bit-identical")

    # 4. A truncated epoch_3.pt (a kill during a write of an older version): skipped.
    t = time.time()
    last = checkpoint(run_dir, f"epoch_{EPOCHS}.pt")
    with open(last, "r+b") as f:
        f.truncate(os.path.getsize(last) // 2)
    job = cluster.sbatch("resubmit")
    cluster.finish(job, "resubmit")
    log = read(os.path.join(run_dir, "out.log"))
    check(f"--resume latest: skipping {last}, it is incomplete" in log, "no warning naming the truncated file")
    resumed_from(run_dir, EPOCHS - 1)
    identical_to_reference(run_dir, reference)
    timings["truncated checkpoint"] = time.time() - t
    say(
        f"4. job {job} skipped the truncated epoch_{EPOCHS}.pt with a warning, resumed from "
        f"epoch_{EPOCHS - 1}.pt, bit-identical"
    )

    for what, seconds in timings.items():
        say(f"  {what}: {seconds:.0f}s")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"slurm-test: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
