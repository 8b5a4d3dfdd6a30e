"""Atomic file output: write to a temporary file beside the target, flush it to disk, rename."""

import os
from contextlib import contextmanager


@contextmanager
def atomic_output(path: str, keep_extension: bool = True):
    """Yield a temporary path next to ``path``; when the block succeeds, flush it to disk and
    rename it to ``path`` (atomic on one file system: ``path`` holds its old content or the
    complete new one, whenever the process dies); remove it when the block fails.

    ``keep_extension``: ``<root>.tmp-<pid><ext>``, so writers that pick a format from the name
    (numpy, matplotlib) behave the same; otherwise ``<path>.tmp-<pid>``, for names that another
    program globs by extension (OpenCLIP's ``--resume latest`` takes every ``*.pt``)."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}" if keep_extension else f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        with open(tmp, "rb") as f:  # the data reaches the disk before the name does
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
