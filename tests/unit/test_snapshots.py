"""Snapshot records: deltas, resolution by time and tag, same-second states."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pkgdepot.errors import BadRequest, NotFound
from pkgdepot.snapshots import Snapshots, has_snapshot, stamp
from pkgdepot.store.fs import FsStore

T0 = 1_780_000_000


def run(tmp_path: Path, body):  # type: ignore[no-untyped-def]
    async def main() -> None:
        store = FsStore(tmp_path / "d").open()
        try:
            await body(await Snapshots(store).open())
        finally:
            await store.close()

    asyncio.run(main())


def test_resolution_and_same_second(tmp_path: Path) -> None:
    async def body(s: Snapshots) -> None:
        a = await s.record("r", {"InRelease": ("a" * 64, 1)}, "cache", when=T0)
        assert a is not None
        assert await s.record("r", {"InRelease": ("a" * 64, 1)}, "cache", when=T0 + 5) is None
        # a second change within the same second is that second's state
        b = await s.record("r", {"InRelease": ("b" * 64, 1)}, "cache", when=T0)
        assert b is not None and b.id == a.id and len(await s.history("r")) == 1
        await s.tag("r", "keep", "latest")
        # now tagged: a same-second change makes a new state at the same time
        c = await s.record("r", {"InRelease": ("c" * 64, 1)}, "cache", when=T0)
        assert c is not None and c.id != a.id and c.created == a.created
        assert (await s.resolve("r", stamp(T0))).id == c.id
        assert (await s.resolve("r", "keep")).id == a.id
        assert await s.file("r", a.id, "InRelease") == ("b" * 64, 1)
        # the clock never runs ahead: a later state gets its own time
        d = await s.record("r", {"Packages": ("d" * 64, 2)}, "cache", when=T0 + 60)
        assert d is not None and d.created == T0 + 60
        assert (await s.resolve("r", stamp(T0 + 59))).id == c.id
        assert await s.manifest("r", d.id) == {"InRelease": ("c" * 64, 1),
                                               "Packages": ("d" * 64, 2)}
        with pytest.raises(NotFound, match="earlier than the first snapshot"):
            await s.resolve("r", stamp(T0 - 1))
        with pytest.raises(BadRequest):
            await s.resolve("r", "20261301T000000Z")
        with pytest.raises(NotFound):
            await s.resolve("r", "nosuchtag")

    run(tmp_path, body)


def test_has_snapshot_reads_the_catalog_file(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What decides whether a sync forks a helper: read from the catalog file
    alone, and False (a fork, as before) when it cannot be read."""
    store = FsStore(tmp_path / "d")
    assert has_snapshot(store, "r") is False  # no data directory yet

    async def body(s: Snapshots) -> None:
        assert has_snapshot(store, "r") is False  # a catalog, no snapshot of r
        await s.record("r", {"InRelease": ("a" * 64, 1)}, "mirror", when=T0)

    run(tmp_path, body)
    assert has_snapshot(store, "r") is True
    assert has_snapshot(store, "other") is False
    monkeypatch.chdir(tmp_path)  # `--data-dir d`: a relative data directory
    assert has_snapshot(FsStore(Path("d")), "r") is True
    store.catalog.write_bytes(b"not a database")
    for name in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        (store.root / name).unlink(missing_ok=True)
    assert has_snapshot(store, "r") is False
