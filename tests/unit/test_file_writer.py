"""The cache's download writer: chunks handed over by the event loop are written
in order by one thread, joined when several wait, hashed, and announced; a
failed write surfaces in the loop instead of being lost."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
import time
from pathlib import Path

import pytest

from pkgdepot.cache import Hasher, _FileWriter


def test_chunks_are_written_in_order_joined_and_hashed() -> None:
    """A slow reader at the other end of a pipe makes writes wait, so that
    chunks pile up and are joined (the writer's buffer grows several times)."""
    rng = random.Random(7)
    chunks = [rng.randbytes(rng.choice((1, 100, 4096, 65536, 300_000))) for _ in range(600)]
    data = b"".join(chunks)
    r, w = os.pipe()
    received = bytearray()

    def read() -> None:
        while True:
            got = os.read(r, 1 << 16)
            if not got:
                return
            received.extend(got)
            time.sleep(0.0005)

    reader = threading.Thread(target=read)
    reader.start()
    announced: list[int] = []
    hasher = Hasher("md5")

    async def main() -> None:
        writer = _FileWriter(w, hasher, announced.append)
        for i, chunk in enumerate(chunks):
            writer.put(chunk)
            if i % 20 == 0:
                await asyncio.sleep(0)
        await writer.finish()
        await asyncio.sleep(0)  # the last announcement runs on the loop

    try:
        asyncio.run(main())
    finally:
        os.close(w)
        reader.join(30)
        os.close(r)
    assert bytes(received) == data
    assert sum(announced) == len(data)
    assert len(announced) < len(chunks)  # some writes took several chunks at once
    assert hasher.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert hasher.digest("md5") == hashlib.md5(data).hexdigest()


def test_a_failed_write_is_raised_in_the_loop(tmp_path: Path) -> None:
    """Writing to a descriptor opened read-only fails: the loop sees the
    OSError (which the cache turns into a failed download), nothing hangs."""
    path = tmp_path / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)

    async def main() -> None:
        writer = _FileWriter(fd, Hasher(None), lambda n: None)
        with pytest.raises(OSError):
            for _ in range(100):
                writer.put(b"x" * 1000)
                await asyncio.sleep(0.001)
            await writer.finish()
        await writer.stop()

    try:
        asyncio.run(main())
    finally:
        os.close(fd)
    assert path.read_bytes() == b""
