#!/usr/bin/env bash
# Regenerate patches/open_clip_train-<version>.patch from the installed open_clip_torch wheel's
# open_clip_train sources (the pinned release) and the edits in scripts/fork_edits.py.
#
# Usage: scripts/make_patch.sh [OUT]   (default: patches/open_clip_train-<installed version>.patch)
# PY selects the interpreter (default: .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
src=$("$PY" -c 'import os, open_clip_train; print(os.path.dirname(open_clip_train.__file__))')
version=$("$PY" -c 'from importlib.metadata import version; print(version("open_clip_torch"))')
out=${1:-patches/open_clip_train-$version.patch}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for side in a b; do
    mkdir -p "$tmp/$side/src/open_clip_train"
    cp "$src"/*.py "$tmp/$side/src/open_clip_train/"
done
"$PY" scripts/fork_edits.py "$tmp/b/src/open_clip_train"
{
    echo "open_clip_dissect for a fork of OpenCLIP's open_clip_train (open_clip_torch $version)."
    echo "Apply in the root of the fork: git apply open_clip_train-$version.patch"
    echo "Regenerate: scripts/make_patch.sh (from the installed wheel's sources)."
    echo
    for f in $(cd "$tmp/a" && ls src/open_clip_train/*.py); do
        diff -u --label "a/$f" --label "b/$f" "$tmp/a/$f" "$tmp/b/$f" || [ $? -eq 1 ]
    done
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -c '^+[^+]' "$out") lines added)"
