#!/usr/bin/env bash
# make patch-check: the committed patch is what scripts/make_patch.sh generates, applies cleanly
# to a pristine copy of the installed open_clip_train, and trains with --selection dissect-mome
# through the patched module (python -m open_clip_train.main) on a small synthetic set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
version=$("$PY" -c 'from importlib.metadata import version; print(version("open_clip_torch"))')
patch="patches/open_clip_train-$version.patch"
[ -f "$patch" ] || { echo "patch-check: $patch not found (the pinned version has no patch)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PY="$PY" scripts/make_patch.sh "$tmp/fresh.patch" >/dev/null
diff -u "$patch" "$tmp/fresh.patch" || { echo "patch-check: $patch is stale; run scripts/make_patch.sh"; exit 1; }
src=$("$PY" -c 'import os, open_clip_train; print(os.path.dirname(open_clip_train.__file__))')
mkdir -p "$tmp/fork/src/open_clip_train"
cp "$src"/*.py "$tmp/fork/src/open_clip_train/"
(cd "$tmp/fork" && git apply --check "$OLDPWD/$patch" && git apply "$OLDPWD/$patch")
echo "patch-check: $patch applies cleanly to open_clip_torch $version's open_clip_train"
"$PY" -m open_clip_dissect.cli make-data --out "$tmp/data" --train-size 512 --val-size 64 \
    --shard-size 128 --quiet
PYTHONPATH="$tmp/fork/src" WANDB_MODE=disabled "$PY" -m open_clip_train.main \
    --model dissect-vit-tiny --precision fp32 --batch-size 32 --lr 1e-3 --warmup 2 --workers 1 \
    --train-data "$tmp/data/train/{00000..00003}.tar" --val-data "$tmp/data/val/00000.tar" \
    --dataset-type webdataset --epochs 1 \
    --selection dissect-mome --ratio 0.5 --logs "$tmp/logs" --name fork --log-every-n-steps 8
"$PY" -m open_clip_dissect.cli summary "$tmp/logs/fork"
