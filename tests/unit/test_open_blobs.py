"""The open-blob cache stays within its limit even when its oldest file is
in use for a long time (a client reading one byte a second)."""

from __future__ import annotations

import os
from pathlib import Path

from pkgdepot.proxy.server import OpenBlobs


def _is_open(fd: int, ino: int) -> bool:
    """Whether `fd` is still the descriptor of the file with inode `ino`."""
    try:
        return os.fstat(fd).st_ino == ino
    except OSError:
        return False


def test_busy_oldest_file_does_not_stop_eviction(tmp_path: Path) -> None:
    blobs = OpenBlobs(limit=8)
    fds: list[tuple[int, int]] = []
    for i in range(100):
        p = tmp_path / f"b{i}"
        p.write_bytes(b"x")
        fd = os.open(p, os.O_RDONLY)     # owned by the cache from put() on
        fds.append((fd, os.fstat(fd).st_ino))
    blobs.put("slow", fds[0][0])         # in use all along, never released
    for i in range(1, 100):
        blobs.put(f"b{i}", fds[i][0])
        blobs.release(f"b{i}")
        assert len(blobs) <= 9           # the limit, plus the busy one
    assert _is_open(*fds[0])             # a file in use is never closed
    assert sum(_is_open(*f) for f in fds) == len(blobs) <= 9  # the rest were closed
    blobs.release("slow")
    blobs.put("new", os.open(tmp_path / "b1", os.O_RDONLY))
    blobs.release("new")
    assert len(blobs) <= 8 and not _is_open(*fds[0])


def test_a_second_open_of_the_same_blob_is_closed_and_shares_the_first(
        tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(b"x")
    blobs = OpenBlobs(limit=8)
    first = os.open(tmp_path / "b", os.O_RDONLY)
    ino = os.fstat(first).st_ino
    assert blobs.put("b", first) == first
    second = os.open(tmp_path / "b", os.O_RDONLY)
    assert blobs.put("b", second) == first  # two responses opened it at once
    assert _is_open(first, ino) and blobs.in_use("b")
    blobs.release("b")
    blobs.release("b")
    blobs.discard("b")                       # deleted from the store: closed
    assert not _is_open(first, ino) and len(blobs) == 0
