"""glibc's allocator, tuned for a process that frees and allocates the same large
buffers over and over (a decoding worker's frames, a training's activations).

By default glibc returns a freed block of more than 128 KiB to the OS, and the next
allocation of that size page-faults it back in, zeroed. `keep_freed_memory` raises both
thresholds that decide this:
- the mmap threshold, above which a block gets its own mapping: a reduced JPEG 2000
  decode took 41 ms with the default and 15 ms with it raised;
- the trim threshold, above which free memory at the heap's top goes back to the OS.
  With only the mmap threshold raised, a v8 render of an explicit VR file took 53 ms,
  15.7 ms of it in the kernel; with both, 42 ms and 2.3. A training step of the image
  and patch networks: 0.75 million page faults per 25 steps, ~7 thousand with both,
  and 7-13% less wall time.
A process keeps up to `THRESHOLD` of freed memory for reuse.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

THRESHOLD = 256 * 1024 * 1024
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to `THRESHOLD` for this process; False
    where the C library is not glibc (nothing to tune)."""
    libc = ctypes.util.find_library("c")
    if not libc:
        return False
    with contextlib.suppress(OSError, AttributeError):
        c = ctypes.CDLL(libc)
        return bool(c.mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(
            c.mallopt(M_TRIM_THRESHOLD, THRESHOLD)
        )
    return False
