#!/bin/bash
# Zero-shot retrieval of every Table 1 run's final checkpoint on MS-COCO 5k and Flickr30K 1k
# (Karpathy test splits) through CLIP_benchmark, then the table itself. On a GPU node:
#
#   COCO_ROOT=/data/mscoco FLICKR_ROOT=/data/flickr30k bash scripts/reproduce/cc3m_eval.sh [LOGS]
#
# COCO_ROOT holds val2014/ and coco_test_karpathy.json; FLICKR_ROOT the Flickr30K *.jpg files and
# flickr30k_test_karpathy.txt (docs/evaluation.md, "Retrieval evaluation"). Nothing is downloaded. Each eval
# writes epoch_40.<benchmark>.json next to the checkpoint; `summary --table` reads them.
set -euo pipefail
LOGS="${1:-logs}"
EPOCH="${EPOCH:-40}"
EVAL_FLAGS=(--model RN50 --device "${DEVICE:-cuda}" --precision amp --batch-size 256 --workers 8)

for run in "$LOGS"/cc3m-*/; do
    checkpoint="${run}checkpoints/epoch_${EPOCH}.pt"
    if [ ! -f "$checkpoint" ]; then
        echo "skipped ${run}: no ${checkpoint}" >&2
        continue
    fi
    open-clip-dissect eval "${EVAL_FLAGS[@]}" --checkpoint "$checkpoint" \
        --benchmark mscoco_captions --dataset-root "${COCO_ROOT:?set COCO_ROOT}"
    open-clip-dissect eval "${EVAL_FLAGS[@]}" --checkpoint "$checkpoint" \
        --benchmark flickr30k --dataset-root "${FLICKR_ROOT:?set FLICKR_ROOT}"
done
open-clip-dissect summary --table "$LOGS"/cc3m-*/
