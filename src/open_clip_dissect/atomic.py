"""Atomic file output: write to a temporary file beside the target, then rename."""
import os
from contextlib import contextmanager


@contextmanager
def atomic_output(path: str):
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds
    (atomic on one file system), remove it when the block fails. The temporary name keeps the
    extension, so writers that pick a format from it (numpy, matplotlib) behave the same."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
