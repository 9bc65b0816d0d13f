"""Functions of the C library that Python does not wrap (glibc's
`malloc_trim`, `mallinfo2`, `syncfs`, `prctl`), looked up once each."""

from __future__ import annotations

import ctypes
import functools
from typing import Any


@functools.cache
def function(name: str) -> Any:
    """The C library's function `name` (errno kept for `ctypes.get_errno`),
    or None where the C library has none (not glibc, or too old)."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (AttributeError, OSError):
        return None
