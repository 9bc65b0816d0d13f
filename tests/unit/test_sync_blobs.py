"""Making blobs durable before the catalog or a snapshot names them: many,
or a few on a machine with little else to write, with one syncfs of the
store's file system; a few while much else is pending, one by one."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from pkgdepot.errors import StoreError
from pkgdepot.store import fs
from pkgdepot.store.fs import SYNC_EACH_MAX, FsStore

#: (blobs, the most unwritten data for which a few go by syncfs)
WAYS = {"one-by-one": (3, -1), "few-by-syncfs": (3, 1 << 62),
        "many-by-syncfs": (SYNC_EACH_MAX + 1, -1)}


def _store_with_blobs(root: Path, n: int) -> tuple[FsStore, list[str]]:
    store = FsStore(root).open(recover=False)
    data = [os.urandom(100) for _ in range(n)]
    store.place_many((d, hashlib.sha256(d).hexdigest()) for d in data)
    return store, [hashlib.sha256(d).hexdigest() for d in data]


@pytest.mark.parametrize("way", WAYS)
def test_sync_blobs_runs_on_a_real_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         way: str) -> None:
    n, most = WAYS[way]
    monkeypatch.setattr(fs, "SYNCFS_UNWRITTEN_MAX", most)
    store, shas = _store_with_blobs(tmp_path / "data", n)
    try:
        store.sync_blobs(shas)
        assert all(store.blob_path(s).read_bytes() for s in shas)
    finally:
        asyncio.run(store.close())


@pytest.mark.parametrize("way", WAYS)
def test_a_missing_blob_is_an_error_not_a_silent_pass(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     way: str) -> None:
    """A state must never name a blob that is not there: syncing one fails."""
    n, most = WAYS[way]
    monkeypatch.setattr(fs, "SYNCFS_UNWRITTEN_MAX", most)
    store, shas = _store_with_blobs(tmp_path / "data", n)
    try:
        with pytest.raises(StoreError, match="is missing from the store"):
            store.sync_blobs([*shas, "0" * 64])
    finally:
        asyncio.run(store.close())


def test_unwritten_bytes_reads_the_kernels_count(tmp_path: Path) -> None:
    """What decides between the two ways: the kernel's Dirty plus Writeback,
    as /proc/meminfo gives them in kB."""
    fields = dict(line.split(":", 1) for line in
                  Path("/proc/meminfo").read_text().splitlines())
    before = int(fields["Dirty"].split()[0]) + int(fields["Writeback"].split()[0])
    got = fs.unwritten_bytes()
    assert got is not None and got % 1024 == 0
    # other writers on the machine move it between the two reads, but not by gigabytes
    assert abs(got - before * 1024) < 1 << 30
