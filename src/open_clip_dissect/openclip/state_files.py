"""Selection-state files: one per rank beside each OpenCLIP checkpoint, written atomically and
read with ``torch.load(weights_only=True)`` (tensors and plain values only)."""
import os
import pickle

import torch

from open_clip_dissect.atomic import atomic_output
from open_clip_dissect.dist.sharded_history import rank_file, saved_rank_files
from open_clip_dissect.errors import InputError

STATE_SUFFIX = ".dissect-state"  # never ".pt": OpenCLIP's --resume latest globs *.pt
STATE_FORMAT = 1


def state_path(checkpoint_path: str) -> str:
    """Selection state that belongs to an OpenCLIP checkpoint: ``epoch_3.pt`` ->
    ``epoch_3.dissect-state`` in the same folder (found from the checkpoint, whatever --name).
    Each rank writes its own file ``epoch_3.dissect-state.rank<r>-of-<W>``."""
    base = checkpoint_path[:-3] if checkpoint_path.endswith(".pt") else checkpoint_path
    return base + STATE_SUFFIX


def save_state(path: str, state: dict, rank: int = 0, world_size: int = 1) -> str:
    """Write this rank's file atomically: a temp file in the same folder, then rename."""
    target = rank_file(path, rank, world_size)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    with atomic_output(target) as tmp:
        torch.save({"format": STATE_FORMAT, "rank": rank, "world_size": world_size, **state}, tmp)
    return target


def remove_state(path: str) -> None:
    for name in saved_rank_files(path, check=False):
        os.remove(name)


def state_files(path: str) -> list:
    """The rank files of a saved state; a clear error when there are none."""
    files = saved_rank_files(path)
    if not files:
        raise InputError("--resume",
            f"the checkpoint has no selection state (expected {rank_file(path, 0, 1)} or "
            f"its per-rank siblings). Resume with the --selection it was trained with, or pass "
            f"--selection-reset-history to start the history afresh.")
    return files


def load_state(path: str) -> dict:
    """One rank file, read with ``torch.load(weights_only=True)``: tensors and plain values only,
    so a tampered file cannot run code. Anything else is an error naming the file."""
    reset = "resume with --selection-reset-history to start the selection history afresh"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(path, "refused: this selection-state file holds pickled Python objects, "
                               f"which are never loaded (only tensors and plain values are); {reset}") from None
    except Exception as exn:  # noqa: BLE001 - truncated, another format, unreadable
        raise InputError(path, f"cannot read this selection-state file ({type(exn).__name__}: "
                               f"{str(exn).splitlines()[0] if str(exn) else ''}); {reset}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise InputError(path, f"selection-state format {found}, expected {STATE_FORMAT}; {reset}")
    return state


def restore_selector(selector, files: list, rank: int) -> None:
    """Resume from the rank files of a saved state. Same world size: this rank's file, exact.
    Another world size (elastic): the history keys this rank now owns, from every file;
    the RNG of the same rank if it existed, else a fresh one."""
    source = files[min(rank, len(files) - 1)]
    first = load_state(source)
    selector.check_strategy(first, source)
    if len(files) == selector.comm.world_size:
        selector.load_state_dict(first, source=source)
        return
    selector.store.load_rank_states([load_state(path)["store"] for path in files])
    selector.strategy.load_state_dict(first.get("strategy_state", {}))  # the same on every rank
    if rank < len(files):
        selector.generator.set_state(first["generator"])
