"""Making blobs durable before the catalog or a snapshot names them: a few
are fsynced one by one, many with one syncfs of the store's file system."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from pkgdepot.errors import StoreError
from pkgdepot.store.fs import SYNC_EACH_MAX, FsStore


def _store_with_blobs(root: Path, n: int) -> tuple[FsStore, list[str]]:
    store = FsStore(root).open(recover=False)
    data = [os.urandom(100) for _ in range(n)]
    store.place_many((d, hashlib.sha256(d).hexdigest()) for d in data)
    return store, [hashlib.sha256(d).hexdigest() for d in data]


@pytest.mark.parametrize("n", [3, SYNC_EACH_MAX + 1], ids=["one-by-one", "syncfs"])
def test_sync_blobs_runs_on_a_real_store(tmp_path: Path, n: int) -> None:
    store, shas = _store_with_blobs(tmp_path / "data", n)
    try:
        store.sync_blobs(shas)
        assert all(store.blob_path(s).read_bytes() for s in shas)
    finally:
        asyncio.run(store.close())


@pytest.mark.parametrize("n", [2, SYNC_EACH_MAX + 1], ids=["one-by-one", "syncfs"])
def test_a_missing_blob_is_an_error_not_a_silent_pass(tmp_path: Path, n: int) -> None:
    """A state must never name a blob that is not there: syncing one fails."""
    store, shas = _store_with_blobs(tmp_path / "data", n)
    try:
        with pytest.raises(StoreError, match="is missing from the store"):
            store.sync_blobs([*shas, "0" * 64])
    finally:
        asyncio.run(store.close())
