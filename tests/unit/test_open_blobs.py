"""The open-blob cache stays within its limit even when its oldest file is
in use for a long time (a client reading one byte a second)."""

from __future__ import annotations

from pathlib import Path

from pkgdepot.proxy.server import OpenBlobs


def test_busy_oldest_file_does_not_stop_eviction(tmp_path: Path) -> None:
    blobs = OpenBlobs(limit=8)
    files = []
    for i in range(100):
        p = tmp_path / f"b{i}"
        p.write_bytes(b"x")
        files.append(open(p, "rb"))  # noqa: SIM115 - owned by the cache
    blobs.put("slow", files[0])          # in use all along, never released
    for i in range(1, 100):
        blobs.put(f"b{i}", files[i])
        blobs.release(f"b{i}")
        assert len(blobs) <= 9           # the limit, plus the busy one
    assert not files[0].closed           # a file in use is never closed
    assert sum(not f.closed for f in files) == len(blobs) <= 9  # the rest were closed
    blobs.release("slow")
    blobs.put("new", open(tmp_path / "b1", "rb"))  # noqa: SIM115
    blobs.release("new")
    assert len(blobs) <= 8 and files[0].closed
