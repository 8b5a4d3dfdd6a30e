#!/bin/bash
# DISSect training on one node, several GPUs (or CPU processes with gloo), through torchrun:
#
#   bash scripts/slurm/train_torchrun.sh      # [extra training flags; a later flag wins]
#
# Running the same command again resumes the run (--resume latest; the epoch that was in
# flight is trained again from its start). torchrun --standalone picks a free port itself.
# The `--` before the training flags: torchrun (torch >= 2.14) takes OpenCLIP's `--logs` for an
# ambiguous abbreviation of its own `--logs-specs` and refuses to start; after `--` every flag
# goes to open_clip_dissect.main, which drops the `--` itself.
#
# ============================== what you edit ==============================
# NPROC (processes = GPUs), DEFAULT_DATA and TRAIN_FLAGS. NPROC=... and DATA=... in the
# environment replace them (with DATA, give its --train-num-samples too: more than the data
# holds is refused); flags after the script name are added (and win).
set -euo pipefail
NPROC="${NPROC:-8}"
# Braces are expanded by OpenCLIP, not by bash: the default sits in single quotes on its own
# line (inside ${DATA:-...} the first "}" would end the default).
DEFAULT_DATA='/data/cc3m/{00000..00331}.tar'
DATA="${DATA:-$DEFAULT_DATA}"
TRAIN_FLAGS=(
    --train-data "$DATA" --dataset-type webdataset --train-num-samples 2905954
    --model RN50 --batch-size 1024 --epochs 40 --lr 1e-3 --wd 0.1 --warmup 2000
    --workers 8 --precision amp --local-loss --gather-with-grad
    --selection dissect-mome --ratio 0.5
)
# ============================ end of what you edit ==========================

# The run (logs/<run name>/) is named after a hash of the training flags: the same experiment
# run again resumes; changed flags start a new run. RUN_NAME=... continues (or names) a run
# whatever the flags.
FLAGS_HASH=$(printf '%s\n' "${TRAIN_FLAGS[@]}" "$@" | sha1sum | cut -c1-8)
RUN_NAME="${RUN_NAME:-dissect-torchrun-${FLAGS_HASH}}"

torchrun --standalone --nproc_per_node "$NPROC" -m open_clip_dissect.main -- \
    "${TRAIN_FLAGS[@]}" --save-frequency 1 --resume latest --logs logs --name "$RUN_NAME" "$@"
