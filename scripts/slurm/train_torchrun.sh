#!/bin/bash
# Single node, several GPUs (or CPU processes with gloo) through torchrun.
# Note the `--` before the training flags: torchrun (torch >= 2.14) takes OpenCLIP's `--logs`
# for an ambiguous abbreviation of its own `--logs-specs` and refuses to start; after `--`
# every flag goes to open_clip_dissect.main, which drops the `--` itself.
set -euo pipefail
NPROC=${NPROC:-8}
DATA=${DATA:-/data/cc3m/{00000..00331}.tar}

torchrun --standalone --nproc_per_node "$NPROC" -m open_clip_dissect.main -- \
    --train-data "$DATA" --dataset-type webdataset --train-num-samples 2905954 \
    --model RN50 --batch-size 1024 --epochs 40 --lr 1e-3 --wd 0.1 --warmup 2000 \
    --workers 8 --precision amp --local-loss --gather-with-grad \
    --selection dissect-mome --ratio 0.5 --logs logs --name dissect-torchrun "$@"
