"""Choosing a device and dtype: probed when asked, never at import time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


def dtype_name(name: str) -> str:
    """The torch name of `--dtype NAME` (aliases resolved); a UsageError naming the valid ones."""
    full = ALIASES.get(name, name)
    if full not in DTYPES:
        raise UsageError(f"--dtype '{name}' is not one of {', '.join([*ALIASES, *DTYPES])}")
    return full


def pick_dtype(name: str | None, device):
    """bfloat16 on a GPU, float32 on a CPU, unless `name` says otherwise."""
    import torch

    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype_name(name))


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


@contextlib.contextmanager
def on_device(device, *modules) -> Iterator[None]:
    """`modules` (None skipped) on `device` for the block, and back where each was after:
    one model on a GPU at a time where they would not fit together (training encodes its
    data first, then trains the transformer alone)."""
    placed = [(m, next(m.parameters()).device) for m in modules if m is not None]
    for module, _ in placed:
        module.to(device)
    try:
        yield
    finally:
        for module, home in placed:
            module.to(home)
