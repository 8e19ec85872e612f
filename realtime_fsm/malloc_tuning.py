"""Keep socket read buffers off ``mmap``: one process-wide glibc ``malloc`` setting for servers.

asyncio's selector transports read with ``sock.recv(256 KiB)`` and shrink the result to what
arrived, so every read, even of a 300-byte Twilio ``media`` frame, first allocates 256 KiB.
glibc serves allocations above its *mmap threshold* (128 KiB when a process starts) with a
fresh ``mmap``, so such a read costs an ``mmap``, a page fault or two, an ``mremap`` and a
``munmap``.  glibc raises the threshold by itself the first time a block that large is freed
at full size, which happens early in some processes and never in others; the read buffer
itself never triggers it (it is shrunk before it is freed).  So two runs of the same server
differ by a kernel round trip per message: measured on a 2-core VM, 14 us against 2 us per
256 KiB ``recv`` of a small message, and about one page fault per message (and 35-50% more
CPU) for a bridge process that happened to stay in the slow mode
(``docs/performance.md``).

:func:`tune_malloc_for_sockets` sets the threshold explicitly (above the read size) and the
heap's trim threshold to twice that, as glibc's own adjustment does: with the mmap threshold
alone, ``free`` gives the top of the heap back after each read and the next read faults it in
again.  The cost is at most a few MiB of freed memory kept for reuse.  It changes the process,
not one socket, so it belongs in a program's ``main`` (``examples/twilio_bridge.py`` calls it),
never in a library import.  uvloop reads into one buffer of its own and does not need it.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from typing import Final

#: ``mallopt`` parameters, from glibc's ``<malloc.h>``.
M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
#: Above asyncio's 256 KiB read size with room for websockets' own buffers.
DEFAULT_MMAP_THRESHOLD: Final = 1 << 20
#: glibc refuses thresholds above ``HEAP_MAX_SIZE / 2`` (32 MiB on 64-bit systems).
MAX_MMAP_THRESHOLD: Final = 32 << 20


def tune_malloc_for_sockets(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Serve allocations up to ``mmap_threshold`` bytes from the heap, and keep up to twice
    that free at its top, so that socket reads stop mapping and unmapping memory.

    Returns True if glibc took both settings, False where there is nothing to tune (not Linux
    with glibc, such as musl or macOS) or glibc refused.  Safe to call more than once."""
    if type(mmap_threshold) is not int or not 0 < mmap_threshold <= MAX_MMAP_THRESHOLD:
        raise ValueError(
            f"mmap_threshold must be an int in (0, {MAX_MMAP_THRESHOLD}], got {mmap_threshold!r}"
        )
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # this process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on a refused value.
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold)
    )
