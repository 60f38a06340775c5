"""Keep glibc's malloc from handing big batch buffers back to the kernel after each batch.

Every batch moves a few blocks of 100 KB-3 MB through a role: a payload packed for a
script call, the reply of an XREADGROUP, a joined JSON blob. With glibc's defaults a freed
block at the top of the heap beyond 128 KB is returned to the kernel (trimmed), and blocks
above the mmap threshold get a mapping of their own; the next batch maps the same memory
afresh and pays a page fault per 4 KB page. On the 2-core VM that was most of the agent's
and the processor's system time (docs/performance.md, "Redis, sink and agent per line").
Raising both thresholds keeps that memory in the heap for the next batch: the peak RSS
does not grow (the memory was in use at the peak anyway), it only stops shrinking between
batches.
"""

from __future__ import annotations

import ctypes
import logging

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_batch_memory"]

log = logging.getLogger(__name__)

#: Blocks below this come from the heap (glibc: 128 KB, rising on its own up to 32 MB).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the heap's top kept for reuse (glibc: 128 KB, twice the mmap threshold).
TRIM_THRESHOLD = 64 * 1024 * 1024

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3

_done = False


def keep_batch_memory() -> bool:
    """Set glibc's trim and mmap thresholds for this process (and the children it forks
    later); False where the C library has no ``mallopt`` (not glibc) or refuses."""
    global _done
    if _done:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # musl, macOS: their allocators do not trim this way
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.debug("mallopt refused the batch memory thresholds; keeping the defaults")
    _done = ok
    return ok
