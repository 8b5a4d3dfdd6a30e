"""``--deterministic``: the same bits from the same command on any machine of a kind, where
PyTorch can give them.

Without it, a run is already repeatable on one machine: the sample order, the loader workers'
seeds and every selection draw are functions of ``--seed`` (tests/test_repeatable.py). What
differs between machines is the arithmetic. On a CPU, PyTorch (ATen) and oneDNN pick their
vector kernels by the instruction set of the host (AVX2, AVX-512, ...), and a sum taken 16
floats at a time rounds differently from one taken 8 at a time: the same command on an AVX-512
host and on an AVX2 host differs in the seventh digit from the first epoch, and training
amplifies it (docs/determinism.md has the measurement). The flag pins both libraries to their
AVX2 kernels on x86-64, so hosts with and without AVX-512 compute the same bits, at the cost of
the wider kernels' speed. The thread count must match too (it sets how sums are split).

On a GPU it asks for PyTorch's deterministic kernels: ``torch.use_deterministic_algorithms``
(an op without a deterministic version warns instead of failing), cuDNN's deterministic
algorithms without benchmarking (OpenCLIP turns benchmarking on; ``settle`` turns it off again
before training) and the cuBLAS workspace setting those need. Reductions across GPUs
(NCCL) are outside it: see docs/determinism.md.
"""

import os
import platform

from open_clip_dissect.errors import InputError

# The kernel pins on x86-64: the variable each library reads, the level it is pinned to.
CPU_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
CUBLAS_WORKSPACE = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def cpu_kernels() -> str:
    """The vector kernels this process's ATen computes with, e.g. ``AVX512`` (what a run's log
    and the benchmark's results record, so that runs from different hosts can be told apart)."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def pin_cpu_kernels(environ=None, machine: str = None) -> dict:
    """Set the kernel pins in ``environ`` (default: this process's; x86-64 only; a pin the user
    set is kept); returns the ones in force. Both libraries read them once, at their first
    computation."""
    environ = os.environ if environ is None else environ
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return {}
    for name, level in CPU_PINS.items():
        environ.setdefault(name, level)
    return {name: environ[name] for name in CPU_PINS}


def request(deterministic: bool, environ=None) -> None:
    """Pin what must be pinned before anything computes: called once the flags are parsed,
    before the model is built."""
    if not deterministic:
        return
    import torch

    environ = os.environ if environ is None else environ
    pins = pin_cpu_kernels(environ)
    # A host without AVX2 computes with lesser kernels whatever the pin (its log line says which).
    avx2 = getattr(torch.cpu, "_is_avx2_supported", lambda: True)()
    if pins and avx2 and cpu_kernels() != pins["ATEN_CPU_CAPABILITY"].upper():
        raise InputError(
            "--deterministic",
            f"this process computed before the flag was read, so its CPU kernels are already "
            f"{cpu_kernels()}; start it fresh, or set {' '.join(f'{k}={v}' for k, v in pins.items())} "
            f"in its environment",
        )
    environ.setdefault(*CUBLAS_WORKSPACE)  # read when the first cuBLAS handle is made
    torch.use_deterministic_algorithms(True, warn_only=True)


def settle(deterministic: bool) -> str:
    """Before training (OpenCLIP's ``main`` sets ``cudnn.benchmark = True`` after parsing the
    flags, so this undoes it); returns the line the run logs about its kernels."""
    import torch

    if not deterministic:
        chosen = "as ATEN_CPU_CAPABILITY sets" if "ATEN_CPU_CAPABILITY" in os.environ else "the host's best"
        return f"CPU kernels: {cpu_kernels()} ({chosen}; --deterministic pins them to AVX2 on any x86-64 host)"
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    pins = {name: os.environ[name] for name in CPU_PINS if name in os.environ}
    return (
        f"--deterministic: CPU kernels {cpu_kernels()}"
        + (f" ({', '.join(f'{k}={v}' for k, v in pins.items())})" if pins else " (not pinned on this platform)")
        + ("; deterministic CUDA kernels, no cuDNN benchmarking" if torch.cuda.is_available() else "")
    )
