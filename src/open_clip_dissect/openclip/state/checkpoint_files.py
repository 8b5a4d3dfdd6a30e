"""Checkpoints that are never half-written, and a ``--resume latest`` that skips broken ones.

OpenCLIP 3.3.0 writes ``epoch_<n>.pt`` in place with ``torch.save``: a job killed during that
write (preemption, time limit, ``scontrol requeue``) leaves a truncated file, ``--resume latest``
picks it, and every rank fails to load it, at every later requeue too. During our runs
(``openclip.launch.main.patched_open_clip_train``) ``open_clip_train.main`` sees instead:

- ``torch``: ``AtomicSaveTorch``, whose ``save`` to a path writes a temporary file beside it,
  flushes it to disk and renames it into place (the selection state is written the same way);
- ``get_latest_checkpoint``: ``latest_complete_checkpoint(upstream)``, newest first, skipping
  (with a warning naming it) a checkpoint that is not complete or whose selection state is not,
  which covers files left by older runs or by other tools.

An explicit ``--resume PATH`` is checked the same way before the run starts (``check_resume``).
"""

import glob
import logging
import os
import zipfile
from typing import Callable, Optional

import torch

from open_clip_dissect.atomic import atomic_output
from open_clip_dissect.distributed.sharded_history import saved_rank_files
from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.state.state_files import state_path

log = logging.getLogger(__name__)

TEMP_MARK = ".tmp-"  # "<target>.tmp-<pid>": never "*.pt", which OpenCLIP's --resume latest globs


def atomic_save(obj, path, *args, **kwargs) -> None:
    """``torch.save(obj, path)`` through ``<path>.tmp-<pid>``, fsync'ed, then renamed to ``path``
    (atomic on one file system): ``path`` is either its old content or the complete new one."""
    path = os.fspath(path)
    with atomic_output(path, keep_extension=False) as tmp:
        torch.save(obj, tmp, *args, **kwargs)
    # Leftovers of an earlier attempt killed while writing this same file.
    for stale in glob.glob(glob.escape(path) + TEMP_MARK + "*"):
        try:
            os.remove(stale)
        except FileNotFoundError:
            pass


class AtomicSaveTorch:
    """Stands in for the name ``torch`` in one module: ``save`` to a path is ``atomic_save``,
    every other attribute (and ``save`` to a file object) is torch's own."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            return atomic_save(obj, f, *args, **kwargs)
        return torch.save(obj, f, *args, **kwargs)


def file_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be loaded, or None. A zip archive (torch's format since 1.6) is checked
    for its central directory (written last, so a truncated file has none) and every member's
    CRC, without unpickling; another file (torch's legacy format) by loading it."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            return f"member {bad} is damaged" if bad else None
        torch.load(path, map_location="cpu")
        return None
    except Exception as e:  # a truncated legacy file fails in many ways
        first = str(e).split(". ")[0]  # torch appends a paragraph of advice
        return f"{type(e).__name__}: {first}"


def state_problem(checkpoint: str) -> Optional[str]:
    """Why the selection state beside ``checkpoint`` cannot be restored, or None (also when
    there is none: a run without --selection, or one the resume itself reports)."""
    try:  # e.g. killed after rank 0 wrote the checkpoint, before rank 1 renamed its state
        files = saved_rank_files(state_path(checkpoint))
    except InputError as exn:
        return f"selection state {exn}"
    for path in files:
        problem = file_problem(path)
        if problem:
            return f"selection state {path}: {problem}"
    return None


def checkpoint_problem(path: str) -> Optional[str]:
    return file_problem(path) or state_problem(path)


def check_resume(path: Optional[str]) -> None:
    """An explicit ``--resume PATH`` (not ``latest``, not remote) must be a complete checkpoint;
    checked before the run starts, as ``--resume latest`` checks the files it picks."""
    if path is None or path == "latest" or "://" in path:
        return
    if not os.path.isfile(path):
        raise InputError("--resume", f"checkpoint not found: {path}")
    problem = file_problem(path)
    if problem:
        raise InputError(
            "--resume",
            f"{path} cannot be loaded, it is incomplete or damaged ({problem}); "
            f"pass an older checkpoint, or --resume latest, which skips such files",
        )


def latest_complete_checkpoint(upstream: Callable) -> Callable:
    """``open_clip_train.main.get_latest_checkpoint`` (open_clip_torch 3.3.0) that, for a local
    folder, returns the newest checkpoint that loads, with its selection state; ``upstream`` is
    the original, used as is for ``--remote-sync`` (no files to check)."""

    def get_latest_checkpoint(path: str, remote: bool):
        if remote:
            return upstream(path, remote)
        from open_clip_train.main import natural_key

        # Upstream's candidates and order: the same recursive glob, newest last by natural_key.
        for candidate in sorted(glob.glob(path + "**/*.pt", recursive=True), key=natural_key, reverse=True):
            problem = checkpoint_problem(candidate)
            if problem is None:
                return candidate
            log.warning(
                f"--resume latest: skipping {candidate}, it is incomplete ({problem}); trying the next older checkpoint"
            )
        return None

    return get_latest_checkpoint
