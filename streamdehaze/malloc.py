"""Keep freed memory in the process for reuse (glibc malloc tuning for frame-sized temporaries).

Every frame the engine allocates and frees temporaries of a few MiB. glibc serves those sizes with fresh
``mmap`` pages (or trims them off the heap when freed), so each frame pays for the kernel zeroing and mapping
the pages again: at 720p that page-fault work was ~20% of the engine's CPU time. Raising the mmap and trim
thresholds makes freed blocks stay in the heap, where the next frame reuses them. Resident memory then stays
at its peak instead of shrinking between frames, which for a video run is the steady state anyway. Over a long
file it creeps up further, as the small blocks decoding frees are left in glibc's fast bins and new ones are carved
from the heap's untouched reserve, until that reserve (about 630 MiB) is all touched: memory kept, not leaked
(BENCHMARKS.md, session 20).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling; larger blocks (4K frames) are still mapped on their own
_TRIM_THRESHOLD = 1 << 30
_TOP_PAD = 64 << 20


@functools.cache
def retain_freed_memory() -> bool:
    """Apply the tuning once per process; returns whether it applied (glibc only, a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
                                                               (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
                                                               (_M_TOP_PAD, _TOP_PAD)))
