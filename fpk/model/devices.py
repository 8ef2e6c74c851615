"""Choosing a device and dtype: probed when asked, never at import time."""

from __future__ import annotations

from fpk.errors import UsageError

DTYPES = ("float32", "bfloat16", "float16")
ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def pick_device(name: str | None):
    """The torch device for `name` (default: cuda if available, else cpu)."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device '{name}' is not a device (try cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return device


def pick_dtype(name: str | None, device):
    """bfloat16 on a GPU, float32 on a CPU, unless `name` says otherwise."""
    import torch

    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    name = ALIASES.get(name, name)
    if name not in DTYPES:
        raise UsageError(f"--dtype '{name}' is not one of {', '.join([*ALIASES, *DTYPES])}")
    return getattr(torch, name)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve large blocks from its heap and keep freed ones for reuse
    (what PyTorch's CPU tuning guide gets from jemalloc or tcmalloc).

    By default glibc maps every block over 32 MB afresh and unmaps it when freed, so each of a
    VAE decode's large activations page-faults all of its memory in again: a third of a tiny
    decode's time here. Process-wide, for the CPU runs of this process; a no-op (False)
    where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 30))
