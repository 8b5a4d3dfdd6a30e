#!/usr/bin/env python
"""The edits of ``patches/open_clip_train-<version>.patch``, applied to a copy of the sources.

``scripts/make_patch.sh`` runs this on a copy of the installed ``open_clip_train`` and diffs the
result against the pristine copy. Each edit is anchored on one line of upstream's code; when an
anchor is missing or ambiguous (a changed upstream), this fails naming the file and the line.

Usage: fork_edits.py SRC_DIR   (the folder holding open_clip_train's main.py and params.py)
"""

import os
import sys

MARK = "  # open_clip_dissect"

# (file, anchor line (stripped), where: "before" | "after" | "replace", new lines). New lines take
# the anchor's indentation.
EDITS = [
    # The fork's own loader decodes only the members its pipeline reads: upstream's default
    # handlers would unpickle a shard's .pyd/.pkl members (see docs/security.md).
    (
        "data.py",
        'wds.decode("pilrgb", handler=log_and_continue),',
        "replace",
        [
            'wds.decode("pilrgb", only=("jpg", "jpeg", "png", "webp", "txt", "json"), '
            "handler=log_and_continue)," + MARK + ": never unpickle",
        ],
    ),
    (
        "params.py",
        "args = parser.parse_args(args)",
        "before",
        [
            "from open_clip_dissect.openclip.launch import fork as dissect" + MARK,
            "dissect.add_args(parser)" + MARK,
        ],
    ),
    (
        "params.py",
        "return args",
        "before",
        [
            "dissect.check_args(args)" + MARK,
            "",
        ],
    ),
    (
        "main.py",
        "from open_clip_train.train import train_one_epoch, evaluate",
        "after",
        [
            "from open_clip_dissect.openclip.launch.fork import session_for" + MARK,
        ],
    ),
    (
        "main.py",
        "data = get_data(",
        "replace",
        [
            "dissect = session_for(args)" + MARK + ": None unless one of its flags is used",
            "get_train_data = dissect.get_data if dissect else get_data" + MARK,
            "train_epoch = dissect.train_one_epoch if dissect else train_one_epoch" + MARK,
            "data = get_train_data(" + MARK,
        ],
    ),
    (
        "main.py",
        "train_one_epoch(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer=writer)",
        "replace",
        [
            "train_epoch(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, "
            "tb_writer=writer)" + MARK,
        ],
    ),
]


def apply_edits(src_dir: str) -> None:
    for name in sorted({e[0] for e in EDITS}):
        path = os.path.join(src_dir, name)
        with open(path) as f:
            lines = f.read().split("\n")
        for file, anchor, where, new in EDITS:
            if file != name:
                continue
            hits = [i for i, line in enumerate(lines) if line.strip() == anchor]
            if len(hits) != 1:
                raise SystemExit(
                    f"{path}: expected the line {anchor!r} once, found it {len(hits)} times "
                    f"(another OpenCLIP version? update scripts/fork_edits.py)"
                )
            i = hits[0]
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            block = [indent + line if line else "" for line in new]
            if where == "before":
                lines[i:i] = block
            elif where == "after":
                lines[i + 1 : i + 1] = block
            else:
                lines[i : i + 1] = block
        with open(path, "w") as f:
            f.write("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    apply_edits(sys.argv[1])
