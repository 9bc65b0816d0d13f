"""The data directory: created with safe permissions, and never written or
read through a symbolic link planted in it. Every link points at a path of
the test's own temporary directory, which must stay untouched."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgdepot.errors import StoreError
from pkgdepot.store import Entry
from pkgdepot.store.fs import FsStore

DATA = b"blob content\n"
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """Where planted links point: must end up exactly as it started."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    (d / "secret").write_bytes(b"secret\n")
    return d


def _untouched(d: Path) -> None:
    assert sorted(p.name for p in d.iterdir()) == ["secret"]
    assert (d / "secret").read_bytes() == b"secret\n"


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_created_with_safe_permissions(tmp_path: Path) -> None:
    store = FsStore(tmp_path / "data").open()
    try:
        for d in ("", "blobs", "tmp"):
            assert _mode(tmp_path / "data" / d) == 0o750, d
        store.place_bytes(DATA, SHA)
        assert _mode(store.blob_path(SHA).parent) == 0o750
        assert _mode(store.blob_path(SHA)) == 0o444
    finally:
        asyncio.run(store.close())


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    (tmp_path / "data/blobs").mkdir(parents=True)
    os.chmod(tmp_path / "data", 0o777)
    os.chmod(tmp_path / "data/blobs", 0o775)
    asyncio.run(FsStore(tmp_path / "data").open().close())
    assert _mode(tmp_path / "data") == 0o750 and _mode(tmp_path / "data/blobs") == 0o750


@pytest.mark.parametrize("planted", ["blobs", "tmp", "catalog.sqlite", "catalog.sqlite-wal",
                                     "blobs/ab"])
def test_planted_link_refused_at_open(tmp_path: Path, elsewhere: Path, planted: str) -> None:
    data = tmp_path / "data"
    (data / planted).parent.mkdir(parents=True, exist_ok=True)
    target = elsewhere / "secret" if "catalog" in planted else elsewhere
    (data / planted).symlink_to(target)
    with pytest.raises(StoreError, match="symbolic link"):
        FsStore(data).open()
    _untouched(elsewhere)


def test_link_planted_as_shard_while_running(tmp_path: Path, elsewhere: Path) -> None:
    """A shard directory replaced by a link after start: the write is refused."""
    store = FsStore(tmp_path / "data").open()
    try:
        store.blob_path(SHA).parent.symlink_to(elsewhere)
        with pytest.raises(StoreError, match="symbolic link"):
            store.place_bytes(DATA, SHA)
        _untouched(elsewhere)
    finally:
        asyncio.run(store.close())


def test_link_planted_as_blob(tmp_path: Path, elsewhere: Path) -> None:
    """A link in a blob's place is neither read nor taken for the blob: storing
    the real content replaces the link, and the file it pointed at is kept."""
    store = FsStore(tmp_path / "data").open()
    blob = store.blob_path(SHA)
    try:
        blob.parent.mkdir()
        blob.symlink_to(elsewhere / "secret")
        with pytest.raises(StoreError, match="symbolic link"):
            store.open_blob(SHA)
        before = os.stat(elsewhere / "secret").st_mtime_ns
        store.place_bytes(DATA, SHA)
        assert not blob.is_symlink() and blob.read_bytes() == DATA
        with store.open_blob(SHA) as f:
            assert f.read() == DATA
        assert os.stat(elsewhere / "secret").st_mtime_ns == before
        _untouched(elsewhere)
    finally:
        asyncio.run(store.close())


def test_catalog_entry_with_linked_blob_is_dropped(tmp_path: Path, elsewhere: Path) -> None:
    store = FsStore(tmp_path / "data").open()
    store.place_bytes(DATA, SHA)

    async def record() -> None:
        await store.commit_entries([Entry("repo/x/pool/a.deb", SHA, len(DATA), 1.0, 1.0)])
        await store.close()

    asyncio.run(record())
    blob = store.blob_path(SHA)
    blob.unlink()
    (elsewhere / "same-size").write_bytes(b"x" * len(DATA))
    blob.symlink_to(elsewhere / "same-size")
    again = FsStore(tmp_path / "data").open()
    try:
        assert again.lookup("repo/x/pool/a.deb") is None  # never served through the link
        assert asyncio.run(again.load("repo/x/pool/a.deb")) is None
    finally:
        asyncio.run(again.close())
    assert (elsewhere / "same-size").read_bytes() == b"x" * len(DATA)
