"""Selection-state files: one per rank beside OpenCLIP's checkpoints, written atomically and
read with ``torch.load(weights_only=True)`` (tensors and plain values only).

Format 3 records the completed ``epoch`` and a ``fingerprint`` of what decides the selection
(strategy, the options its settings read, the ratio where it reads one, batch mode, scope, seed,
world size, and the scoring mode and CLIPScore scale where it reads scores). Format 2 (no scoring
mode; every option) is still read. The state of completed epoch N is always
``epoch_N.dissect-state.rank<r>-of-<W>``, whatever checkpoint file OpenCLIP writes for that
epoch (``epoch_N.pt`` or ``epoch_latest.pt``): a resume reads the checkpoint's own epoch and
takes the state of that epoch, never another. A state file is deleted only once no checkpoint
needs it (``collect_stale_states``), so a kill at any instant leaves a matching pair.
"""

import glob
import logging
import os
import pickle
import re
from typing import Dict, List, Optional

import torch

from open_clip_dissect.atomic import atomic_output
from open_clip_dissect.distributed.sharded_history import rank_file, saved_rank_files
from open_clip_dissect.errors import InputError

log = logging.getLogger(__name__)
STATE_SUFFIX = ".dissect-state"  # never ".pt": OpenCLIP's --resume latest globs *.pt
STATE_FORMAT = 3  # 1: no epoch, no fingerprint (before crash-safe resume); 2: no scoring mode
READABLE_FORMATS = (2, 3)
RESET = "resume with --selection-reset-history to start the selection history afresh"
# Fingerprint fields a resumed run may change: the world size (elastic resume re-deals the keys).
ELASTIC_FIELDS = ("world_size",)


def state_path(checkpoint_path: str) -> str:
    """Selection state named after an OpenCLIP checkpoint: ``epoch_3.pt`` ->
    ``epoch_3.dissect-state`` in the same folder (found from the checkpoint, whatever --name).
    Each rank writes its own file ``epoch_3.dissect-state.rank<r>-of-<W>``."""
    base = checkpoint_path[:-3] if checkpoint_path.endswith(".pt") else checkpoint_path
    return base + STATE_SUFFIX


def epoch_state_path(checkpoint_dir: str, epoch: int) -> str:
    """The state of completed epoch ``epoch`` in a checkpoint folder."""
    return state_path(os.path.join(checkpoint_dir, f"epoch_{epoch}.pt"))


def save_state(
    path: str,
    state: dict,
    rank: int = 0,
    world_size: int = 1,
    epoch: Optional[int] = None,
    fingerprint: Optional[dict] = None,
) -> str:
    """Write this rank's file atomically: a temp file in the same folder, flushed, then renamed."""
    target = rank_file(path, rank, world_size)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    with atomic_output(target) as tmp:
        torch.save(
            {
                "format": STATE_FORMAT,
                "rank": rank,
                "world_size": world_size,
                "epoch": epoch,
                "fingerprint": fingerprint or {},
                **state,
            },
            tmp,
        )
    return target


def state_files(path: str) -> list:
    """The rank files of a saved state; a clear error when there are none."""
    files = saved_rank_files(path)
    if not files:
        raise InputError(
            "--resume",
            f"the checkpoint has no selection state (expected {rank_file(path, 0, 1)} or "
            f"its per-rank siblings). Resume with the --selection it was trained with, or pass "
            f"--selection-reset-history to start the history afresh.",
        )
    return files


def saved_epoch(path: str) -> Optional[int]:
    """The completed epoch a state file records (its tensors are memory-mapped, not read)."""
    return load_state(path, mmap=True).get("epoch")


def find_state(checkpoint: str, epoch: int) -> str:
    """The state (base path) of the checkpoint's own completed ``epoch``: the one named after the
    checkpoint if it records that epoch, else ``epoch_<epoch>.dissect-state`` beside it. Fails
    naming the checkpoint and the states it looked at when none matches."""
    looked = []
    for base in dict.fromkeys([state_path(checkpoint), epoch_state_path(os.path.dirname(checkpoint), epoch)]):
        files = saved_rank_files(base, check=False)
        if not files:
            looked.append(f"{base} (none)")
            continue
        found = saved_epoch(files[0])
        if found == epoch:
            return base
        looked.append(f"{files[0]} (epoch {found})")
    raise InputError(
        "--resume",
        f"{checkpoint} holds epoch {epoch}, and no selection state of that epoch "
        f"lies beside it: {'; '.join(looked)}. {RESET[0].upper() + RESET[1:]}.",
    )


def upgrade_fingerprint(saved: Dict, current: Dict, source: str) -> Dict:
    """A format-2 fingerprint in format 3's terms: options only where the resumed run reads
    them, and the scoring mode (not recorded then) assumed to be the resumed run's."""
    saved = dict(saved)
    if "options" in saved and "options" in current:
        saved["options"] = {k: v for k, v in saved["options"].items() if k in current["options"]}
    if "selection_scoring_mode" in current:
        saved["selection_scoring_mode"] = current["selection_scoring_mode"]
        log.warning(
            f"{source}: a format-2 selection state does not record its scoring mode; assuming "
            f"--selection-scoring-mode {current['selection_scoring_mode']} as now"
        )
    return saved


def check_fingerprint(saved: Dict, current: Dict, source: str) -> None:
    """The resumed run must select as the saved one did: every differing field is named. Only
    the fields the resumed run's selection reads count (``current``'s): a saved field it does
    not read, such as the scoring mode of a ``random`` state written before its draw stopped
    reading scores, cannot change its decisions."""
    fields = sorted(set(current) - set(ELASTIC_FIELDS))
    differ = [f"{f}: saved {saved.get(f)!r}, now {current.get(f)!r}" for f in fields if saved.get(f) != current.get(f)]
    if differ:
        raise InputError(
            "--resume",
            f"{source} was written by a run with other selection settings "
            f"({'; '.join(differ)}); {RESET} under the new settings",
        )


def collect_stale_states(checkpoint_dir: str, latest_epoch: Optional[int]) -> List[str]:
    """Delete the state files no checkpoint needs any more; returns the removed bases. A state of
    epoch M is kept while ``epoch_M.pt`` exists, while ``epoch_latest.pt`` holds epoch M
    (``latest_epoch``), or while it is newer than every checkpoint (its checkpoint is still being
    written)."""
    epochs = {}
    for name in glob.glob(os.path.join(glob.escape(checkpoint_dir), f"epoch_*{STATE_SUFFIX}.rank*-of-*")):
        match = re.fullmatch(rf"epoch_(\d+){re.escape(STATE_SUFFIX)}\.rank\d+-of-\d+", os.path.basename(name))
        if match:
            epochs.setdefault(int(match.group(1)), []).append(name)
    checkpoints = {
        int(m.group(1))
        for m in (
            re.fullmatch(r"epoch_(\d+)\.pt", os.path.basename(n))
            for n in glob.glob(os.path.join(glob.escape(checkpoint_dir), "epoch_*.pt"))
        )
        if m
    }
    if latest_epoch is not None:
        checkpoints.add(latest_epoch)
    newest = max(checkpoints, default=-1)
    removed = []
    for epoch, names in sorted(epochs.items()):
        if epoch in checkpoints or epoch > newest:
            continue
        for name in names:
            try:
                os.remove(name)
            except FileNotFoundError:  # another process collected it first
                pass
        removed.append(epoch_state_path(checkpoint_dir, epoch))
    return removed


def checkpoint_epoch(path: str) -> Optional[int]:
    """The ``epoch`` an OpenCLIP checkpoint holds (tensors memory-mapped, not read); None when
    it does not load."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # noqa: BLE001 - incomplete or foreign: it pairs with nothing
        return None


def load_state(path: str, mmap: bool = False) -> dict:
    """One rank file, read with ``torch.load(weights_only=True)``: tensors and plain values only,
    so a tampered file cannot run code. Anything else is an error naming the file."""
    reset = RESET
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise InputError(
            path,
            "refused: this selection-state file holds pickled Python objects, "
            f"which are never loaded (only tensors and plain values are); {reset}",
        ) from None
    except Exception as exn:  # noqa: BLE001 - truncated, another format, unreadable
        raise InputError(
            path,
            f"cannot read this selection-state file ({type(exn).__name__}: "
            f"{str(exn).splitlines()[0] if str(exn) else ''}); {reset}",
        ) from None
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        older = " (written before states recorded their epoch and run)" if found == 1 else ""
        raise InputError(path, f"selection-state format {found}{older}, expected {STATE_FORMAT}; {reset}")
    return state


def restore_selector(selector, files: list, rank: int, fingerprint: Optional[Dict] = None) -> None:
    """Resume from the rank files of a saved state. Same world size: this rank's file, exact.
    Another world size (elastic): the history keys this rank now owns, from every file;
    the RNG of the same rank if it existed, else a fresh one. ``fingerprint``: the resumed
    run's, which must match the saved one (``check_fingerprint``)."""
    source = files[min(rank, len(files) - 1)]
    first = load_state(source)
    selector.check_strategy(first, source)
    if fingerprint is not None:
        saved = first.get("fingerprint", {})
        if first.get("format") == 2:
            saved = upgrade_fingerprint(saved, fingerprint, source)
        check_fingerprint(saved, fingerprint, source)
    if len(files) == selector.comm.world_size:
        selector.load_state_dict(first, source=source)
        return
    selector.store.load_rank_states([load_state(path)["store"] for path in files])
    selector.strategy.load_state_dict(first.get("strategy_state", {}))  # the same on every rank
    if rank < len(files):
        selector.generator.set_state(first["generator"])
