"""The C allocator (glibc): what it holds, and giving freed memory back.

A burst of downloads leaves the allocator holding freed pages that it keeps
for reuse (a few megabytes per process); `release_free_memory` returns them
to the system once the burst is over, as `malloc_trim(3)` does.
"""

from __future__ import annotations

import ctypes

from pkgdepot import libc


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_info() -> dict[str, int]:
    """The allocator's view: bytes in use, and bytes freed but kept."""
    fn = libc.function("mallinfo2")
    if fn is None:
        return {}
    fn.restype = _MallInfo2
    mi = fn()
    return {"malloc_in_use": int(mi.uordblks + mi.hblkhd), "malloc_free": int(mi.fordblks)}


def release_free_memory() -> bool:
    """Blocking (milliseconds): hand freed heap pages back to the system.
    True if some memory was released."""
    fn = libc.function("malloc_trim")
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_size_t]
    return bool(fn(0))
