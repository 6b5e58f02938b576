"""Keep freed CPU memory in the process: glibc malloc settings for training loops on the CPU.

A training step allocates the same large activations every step. glibc serves a block above its mmap threshold
(at most 32 MiB) with a fresh ``mmap`` and gives it back on ``free``, and trims the heap's free top above its trim
threshold: the next step then touches new pages, one page fault per 4 KiB (measured, R3GAN's D step at 64 px,
batch 8, one thread: 31-37 thousand faults per step with two D passes, 320-350 thousand with one pass on
[reals; fakes], about half its time). :func:`keep_freed_memory` sets ``M_MMAP_MAX`` to 0 (every block comes from
the heap) and ``M_TRIM_THRESHOLD`` to 2 GiB (the heap keeps its free top), so a step reuses the pages of the last.

It is process-wide and the process then holds its peak heap until it exits. ``ganfast train`` on the CPU and the
R3GAN D step that ``patch_stylegan()`` installs call it; ``GANFAST_KEEP_FREED_MEMORY=0`` in the environment turns
it off (glibc's own ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_`` variables still apply). Elsewhere than
glibc (macOS, musl, Windows) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_memory", "ENV"]

ENV = "GANFAST_KEEP_FREED_MEMORY"
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
TRIM_THRESHOLD = 2 ** 31 - 1  # mallopt takes an int: the largest, 2 GiB

_applied = False


def keep_freed_memory() -> bool:
    """Sets glibc malloc to keep freed memory for reuse (see the module docstring); True if the settings are in
    effect (now or from an earlier call), False where the C library is not glibc or ``GANFAST_KEEP_FREED_MEMORY``
    is 0 / false / off / no."""
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "off", "no"):
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied


def _glibc_mallopt():
    """glibc's ``mallopt`` (ctypes), or None when the process's C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (present in glibc only)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
