import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from open_clip_dissect import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "dissect-vit-tiny"
# The smallest useful training command on CPU; tests add data, logs and name.
TINY_TRAIN_FLAGS = ["--model", TINY, "--precision", "fp32", "--batch-size", "32", "--lr", "1e-3",
                    "--warmup", "2", "--seed", "0", "--log-every-n-steps", "1"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """512 noisy training pairs in 4 shards (+ CSV), 64 clean validation pairs, 32 retrieval
    test images with 3 captions each."""
    out = str(tmp_path_factory.mktemp("synthetic"))
    manifest = synthetic.make_dataset(out, train_size=512, val_size=64, seed=0, noise_rate=0.4,
                                      noise_kind="shuffle", shard_size=128, csv=True, progress=False,
                                      test_size=32, test_captions=3)
    return SimpleNamespace(
        root=out,
        train=manifest["splits"]["train"]["pattern"],
        val=manifest["splits"]["val"]["pattern"],
        test=manifest["splits"]["test"]["pattern"],
        test_csv=manifest["splits"]["test"]["csv"],
        train_csv=manifest["splits"]["train"]["csv"],
        val_csv=manifest["splits"]["val"]["csv"],
        manifest=manifest,
    )


def run_module(module, args, cwd=None, timeout=600, env=None):
    """Run ``python -m module args`` in a fresh interpreter; return the CompletedProcess."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
