"""``FakeCuda``: run code as if on a GPU, on a machine without one, and record its host syncs.

Inside ``with FakeCuda() as gpu:`` a tensor made on (or copied to) ``"cuda"`` is a FakeTensor:
shape, dtype and device only, no data (``torch._subclasses.FakeTensorMode``). CPU tensors stay
real, so host code (the CPU history store, the key hashes) runs for real. Every point where real
CUDA code would make the host wait for the GPU is recorded in ``gpu.syncs`` and given a
stand-in result, so that the code under test runs on:

- ``item``: a scalar read (``.item()``, ``int(t)``, ``bool(t)``, a 0-d tensor used as an index);
  stand-in 0 / False;
- ``d2h``: a copy to the host; stand-in zeros (so the "first NaN + 1" code reads "none");
- ``h2d``: a copy to the GPU from pageable memory (blocking, or non-blocking that the driver may
  stage by synchronising); one from a pinned buffer with ``non_blocking=True`` is not a sync;
- an op whose output size depends on the data (``nonzero``, boolean-mask indexing,
  ``unique``), named by the op; stand-in: the op on real zeros (True for masks).

FakeTensorMode also raises, as CUDA would, when an op mixes a CUDA tensor with a CPU one (other
than a 0-d CPU scalar): "no tensor on the wrong device" comes for free.
"""

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
    unset_fake_temporarily,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

aten = torch.ops.aten


def _device_type(value):
    return None if value is None else torch.device(value).type


class FakeCuda(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.fake = FakeTensorMode(allow_non_fake_inputs=True)
        self.syncs = []
        self._pinned = {}  # data_ptr -> the pinned (here: ordinary) buffer, kept alive

    def mark(self):
        """The number of syncs so far (``since(mark)`` counts the ones after it)."""
        return len(self.syncs)

    def since(self, mark):
        return [kind for kind, _ in self.syncs[mark:]]

    # -- stand-ins ----------------------------------------------------------------------------
    @staticmethod
    def _real(t):
        with unset_fake_temporarily():
            if t.dtype == torch.bool:
                return torch.ones(t.shape, dtype=t.dtype)
            return torch.zeros(t.shape, dtype=t.dtype)

    def _fake_like(self, t, device):
        return torch.empty(t.shape, dtype=t.dtype, device=device)  # under the fake mode: fake

    def _h2d(self, src, non_blocking, what):
        pinned = src.untyped_storage().data_ptr() in self._pinned  # buffers kept alive: no reuse
        if not (pinned and non_blocking):
            self.syncs.append(("h2d", what))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        fakes = [x for x in flat if isinstance(x, FakeTensor)]
        target = _device_type(kwargs.get("device"))

        if func is aten.empty.memory_format and kwargs.get("pin_memory") and target in (None, "cpu"):
            with unset_fake_temporarily():
                buffer = func(*args, **{**kwargs, "pin_memory": False})
            self._pinned[buffer.untyped_storage().data_ptr()] = buffer
            return buffer
        if func is aten._to_copy.default:
            src = args[0]
            if isinstance(src, FakeTensor) and src.device.type == "cuda" and target == "cpu":
                if not kwargs.get("non_blocking"):
                    self.syncs.append(("d2h", tuple(src.shape)))
                real = self._real(src)
                with unset_fake_temporarily():
                    return real.to(kwargs.get("dtype") or real.dtype)
            if not isinstance(src, FakeTensor) and target == "cuda":
                self._h2d(src, kwargs.get("non_blocking", False), tuple(src.shape))
        if func is aten.copy_.default:
            dst, src = args[0], args[1]
            if isinstance(src, FakeTensor) and src.device.type == "cuda" and not isinstance(dst, FakeTensor):
                self.syncs.append(("d2h", tuple(src.shape)))
                with unset_fake_temporarily():
                    return dst.zero_()
            if (
                isinstance(dst, FakeTensor)
                and dst.device.type == "cuda"
                and not isinstance(src, FakeTensor)
                and src.device.type == "cpu"
                and src.dim() > 0
            ):
                self._h2d(src, args[2] if len(args) > 2 else kwargs.get("non_blocking", False), tuple(src.shape))
        if func is aten._local_scalar_dense.default and fakes:
            self.syncs.append(("item", tuple(args[0].shape)))
            return False if args[0].dtype == torch.bool else 0

        if not fakes and target != "cuda":
            with unset_fake_temporarily():  # real CPU work
                return func(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        except (DynamicOutputShapeException, DataDependentOutputException):
            self.syncs.append((str(func).split(".")[1], tuple(fakes[0].shape)))
            device = fakes[0].device
            real_args, real_kwargs = tree_map(
                lambda x: self._real(x) if isinstance(x, FakeTensor) else x, (args, kwargs)
            )
            with unset_fake_temporarily():
                out = func(*real_args, **real_kwargs)
            return tree_map(lambda x: self._fake_like(x, device) if isinstance(x, torch.Tensor) else x, out)

    def __enter__(self):
        self.fake.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        return self.fake.__exit__(*exc)
