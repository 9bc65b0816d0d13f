"""Snapshot diffs: added, removed, upgraded and downgraded packages, newest
version per (name, arch), package lists kept per index blob and dropped by GC."""

from __future__ import annotations

import asyncio
import lzma
import os
from pathlib import Path

from pkgdepot.diff import diff, prepare
from pkgdepot.snapshots import Snapshots, stamp
from pkgdepot.store.fs import FsStore

T0 = 1_780_000_000
INDEX = "dists/s/main/binary-amd64/Packages"


def packages(*stanzas: tuple[str, str, str]) -> bytes:
    return "".join(f"Package: {n}\nVersion: {v}\nArchitecture: {a}\n"
                   f"Filename: pool/{n}_{v}_{a}.deb\nSize: 1\n\n"
                   for n, v, a in stanzas).encode()


OLD = packages(("keep", "1.0", "amd64"), ("up", "1.0", "amd64"), ("up", "0.9", "amd64"),
               ("down", "2.0", "amd64"), ("gone", "1.0", "amd64"), ("arch", "1.0", "amd64"),
               ("epoch", "9.0", "amd64"))
NEW = packages(("keep", "1.0", "amd64"), ("up", "1.1~rc1", "amd64"),
               ("up", "1.0", "amd64"),  # still listed: the newest (1.1~rc1) counts
               ("down", "1.5", "amd64"), ("new", "0.1", "amd64"), ("arch", "1.0", "amd64"),
               ("arch", "1.0", "i386"), ("epoch", "1:1.0", "amd64"))


def test_diff_kinds_and_kept_lists(tmp_path: Path) -> None:
    async def main() -> None:
        store = FsStore(tmp_path / "d").open()
        try:
            s = await Snapshots(store).open()
            refs = []
            for k, data in enumerate((OLD, NEW)):
                xz = lzma.compress(data)
                ref = (await store.put_bytes(xz), len(xz))
                refs.append(ref)
                await s.record("r", {INDEX + ".xz": ref}, "cache", when=T0 + 10 * k)
            first = await diff(store, s, "r", stamp(T0), "latest")
            assert first.added == [("arch", "1.0", "i386"), ("new", "0.1", "amd64")]
            assert first.removed == [("gone", "1.0", "amd64")]
            assert first.upgraded == [("epoch", "9.0", "1:1.0", "amd64"),
                                      ("up", "1.0", "1.1~rc1", "amd64")]
            assert first.downgraded == [("down", "2.0", "1.5", "amd64")]
            kept = [store.derived_path("pkglist", ref[0]) for ref in refs]
            assert all(p.exists() for p in kept)
            # the second diff reads the kept lists: same answer
            again = await diff(store, s, "r", stamp(T0), "latest")
            assert again.as_dict() == first.as_dict()
            # the other direction swaps the roles
            back = await diff(store, s, "r", "latest", stamp(T0))
            assert back.added == [("gone", "1.0", "amd64")]
            assert back.downgraded == [("epoch", "1:1.0", "9.0", "amd64"),
                                       ("up", "1.1~rc1", "1.0", "amd64")]
            # a kept list whose blob is gone goes with the next GC
            store.blob_path(refs[0][0]).unlink()
            await store.collect_garbage(grace=0)
            assert not kept[0].exists() and kept[1].exists()
        finally:
            await store.close()

    asyncio.run(main())


def test_prepare_keeps_lists_ahead_of_a_diff(tmp_path: Path) -> None:
    async def main() -> None:
        store = FsStore(tmp_path / "d").open()
        try:
            ref = (await store.put_bytes(OLD), len(OLD))
            await prepare(store, {INDEX: ref, "dists/s/InRelease": ("0" * 64, 1),
                                  "dists/s/main/binary-amd64/Release": None})
            kept = store.derived_path("pkglist", ref[0]).read_bytes().split(b"\n")
            assert b"up\tamd64\t0.9" in kept and b"up\tamd64\t1.0" in kept
            assert len(kept) == 7
            # an index that does not parse leaves no list and raises nothing
            bad = b"\x00garbage" * 10
            bad_ref = (await store.put_bytes(bad), len(bad))
            await prepare(store, {INDEX + ".xz": bad_ref})
            assert not store.derived_path("pkglist", bad_ref[0]).exists()
            assert os.listdir(store.tmp) == []
        finally:
            await store.close()

    asyncio.run(main())
