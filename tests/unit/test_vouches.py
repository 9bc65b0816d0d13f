"""The catalog's vouches: a large index that changed a little writes only
the rows that changed, and what it records is what the index says."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pkgdepot.formats import Digest, Vouch
from pkgdepot.store.fs import FsStore


def _vouches(n: int, changed: frozenset[int] = frozenset()) -> list[Vouch]:
    return [Vouch(f"repo/deb/pool/main/p{i}.deb", 100 + i,
                  Digest("sha256", ("f" if i in changed else "a") * 64))
            for i in range(n)]


def test_a_large_index_writes_only_what_changed(tmp_path: Path) -> None:
    async def run() -> None:
        store = FsStore(tmp_path / "data").open()
        try:
            assert await store.add_vouches(_vouches(1000)) == 1000
            assert await store.add_vouches(_vouches(1000)) == 0  # nothing changed
            changed = frozenset({3, 500, 999})
            assert await store.add_vouches(_vouches(1001, changed)) == 4  # 3 changed, 1 new
            for i in (3, 500, 999, 1000, 0, 42):
                v = await store.vouch_for(f"repo/deb/pool/main/p{i}.deb")
                assert v is not None and v.size == 100 + i
                assert v.digest.hexdigest == ("f" if i in changed else "a") * 64
            # a small index is written whole, as before
            assert await store.add_vouches(_vouches(10)) == 10
        finally:
            await store.close()

    asyncio.run(run())
