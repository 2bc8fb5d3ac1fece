"""glibc malloc settings for the edge daemon, which runs on memory-tight store Pis.

Only one, and only where it was measured to help (bench/storefootprint, see BENCHMARKS.md):

- `M_MMAP_THRESHOLD` = 64 KiB. The daemon's large buffers are short-lived and recurring: an
  LLRP tag report body (tens to hundreds of KB per reader, every read cycle), a message's
  JSON (up to 256 KB), the event loop's read buffers. By default glibc raises its mmap
  threshold to the size of every mmapped block that is freed (and the heap's trim
  threshold to twice that), so after the first large reports such buffers come from the
  brk heap, and the holes they leave stay resident among longer-lived allocations. A
  threshold set once is never raised again: blocks that do not fit the heap's free top are
  mmapped and given back whole when freed, and the heap's top is trimmed past 128 KiB.
  Measured: about 1.3 MB less RSS at 20,000 items (the heap 15.0 -> 12.2 MB), for a few
  dozen mmap/munmap calls a second.

Not set, because measured to change nothing here: `M_ARENA_MAX` (the daemon allocates
almost only on its event-loop thread, so per-thread arenas hold next to nothing) and
`malloc_trim()` after the arrival flood (it returned under 0.1 MB: the heap is not left
with free pages, it is fragmented below page size or in use).

A no-op where the C library is not glibc (musl, macOS), and where the administrator set
MALLOC_MMAP_THRESHOLD_ in the environment (that choice wins).
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD_BYTES = 64 * 1024
ENV_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it)
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc() -> bool:
    """Apply the settings above; True when they were applied."""
    if os.environ.get(ENV_OVERRIDE):
        return False
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; malloc keeps its defaults")
        return False
    return True
