"""``CollectiveAudit``: what a process sends through ``torch.distributed``, collective by collective.

Inside ``with CollectiveAudit() as audit:`` every collective called as ``dist.<name>`` is recorded
(``audit.calls``) with the op, dtype, shape, the group's backend, the bytes this rank receives
from the others and ``audit.label`` at the time (a test sets it to name the step), then run.
Bytes received: what arrives from other ranks (all-gather: the others' tensors; all-to-all: the
rows sent here by others; gather: the others' tensors on the root, 0 elsewhere; scatter and
broadcast: the tensor on every rank but the source; all-reduce: the tensor's size).
"""

import inspect
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
import torch.distributed as dist

# What NCCL reduces and moves (ncclDataType_t): no bool, no complex.
NCCL_DTYPES = frozenset(
    {
        torch.int8,
        torch.uint8,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.float8_e4m3fn,
        torch.float8_e5m2,
    }
)
OPS = (
    "all_gather",
    "all_gather_into_tensor",
    "all_reduce",
    "all_to_all_single",
    "all_to_all",
    "gather",
    "scatter",
    "broadcast",
    "reduce",
    "reduce_scatter_tensor",
    "barrier",
)


@dataclass
class Call:
    op: str
    dtype: Optional[str]
    shape: Tuple[int, ...]
    backend: str
    received: int
    label: Any

    def signature(self):
        """What every rank must issue alike: an all-to-all's row count may differ by rank."""
        shape = self.shape[1:] if self.op == "all_to_all_single" else self.shape
        return self.op, self.dtype, shape, self.backend, self.label


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _measure(op, a, world, rank):
    """(tensor that describes the call, bytes received from the other ranks)."""
    if op == "all_gather":
        return a["tensor"], (world - 1) * _nbytes(a["tensor"])
    if op == "all_gather_into_tensor":
        return a["input_tensor"], (world - 1) * _nbytes(a["input_tensor"])
    if op in ("all_reduce", "reduce"):
        return a["tensor"], _nbytes(a["tensor"])
    if op == "all_to_all_single":
        out, splits = a["output"], a["output_split_sizes"]
        if splits is None:
            return out, _nbytes(out) * (world - 1) // world
        row = _nbytes(out) // max(out.shape[0], 1) if out.shape[0] else 0
        return out, row * (sum(splits) - splits[rank])
    if op == "all_to_all":
        outs = a["output_tensor_list"]
        return outs[0], sum(_nbytes(t) for q, t in enumerate(outs) if q != rank)
    if op == "gather":
        return a["tensor"], (world - 1) * _nbytes(a["tensor"]) if rank == a["dst"] else 0
    if op == "scatter":
        return a["tensor"], 0 if rank == a["src"] else _nbytes(a["tensor"])
    if op == "broadcast":
        return a["tensor"], 0 if rank == a["src"] else _nbytes(a["tensor"])
    if op == "reduce_scatter_tensor":
        return a["output"], _nbytes(a["output"])
    return None, 0  # barrier


class CollectiveAudit:
    def __init__(self):
        self.calls = []
        self.label = None
        self._saved = {}

    def __enter__(self):
        for name in OPS:
            original = getattr(dist, name)
            self._saved[name] = original
            setattr(dist, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(dist, name, original)
        self._saved = {}
        return False

    def _wrap(self, name, original):
        signature = inspect.signature(original)

        def call(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            group = bound.arguments.get("group")
            tensor, received = _measure(name, bound.arguments, dist.get_world_size(group), dist.get_rank(group))
            self.calls.append(
                Call(
                    name,
                    None if tensor is None else str(tensor.dtype).replace("torch.", ""),
                    () if tensor is None else tuple(tensor.shape),
                    str(dist.get_backend(group)),
                    received,
                    self.label,
                )
            )
            return original(*args, **kwargs)

        return call

    def by_label(self, label):
        return [c for c in self.calls if c.label == label]
