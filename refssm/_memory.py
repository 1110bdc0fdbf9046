"""Large temporaries without fresh page faults every step.

A training step allocates the same large arrays (activations, spectra, gradients) every step. glibc
serves allocations above M_MMAP_THRESHOLD (128 KiB to 32 MiB, adaptive) with a fresh mmap and returns
them to the kernel on free, so every step page-faults its working set afresh (measured: 1.25-1.33x on
the canonical step). `reuse_freed_memory()` raises the mmap threshold and the trim threshold, so freed
blocks stay in the heap and the next step's same-sized arrays reuse them: a workspace per step, kept
by the allocator. Peak memory is unchanged (the same arrays live at the same time); memory is simply
not handed back between steps. A no-op where glibc's mallopt is not available.
"""

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
_MAX_MMAP_THRESHOLD = 32 * 1024 * 1024 if ctypes.sizeof(ctypes.c_void_p) == 8 else 512 * 1024  # glibc's cap


def reuse_freed_memory():
    """Ask glibc to keep freed memory for reuse (see the module doc). Returns True if it applied."""
    name = ctypes.util.find_library("c")
    if name is None:                                                           # pragma: no cover
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):                                          # pragma: no cover
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, 2**30))
