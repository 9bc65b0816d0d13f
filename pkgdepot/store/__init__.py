"""The store: immutable blobs addressed by sha256, and a catalog that maps
cache keys to blobs and remembers what indices vouch for.

`Store` is the interface the rest of pkgdepot uses; `pkgdepot.store.fs`
implements it with files on the local file system and SQLite. Nothing is
ever visible half-written: blobs are written to a temporary file, fsynced,
verified and then renamed into place, and only then entered in the catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from pkgdepot.formats import Vouch


def repo_key(repo: str, path: str = "") -> str:
    """The catalog key of `path` in the named repository `repo`; with no
    path, the prefix of every key of that repository (its cached files and,
    for a mirror, its packages)."""
    return f"repo/{repo}/{path}"


@dataclass(slots=True)
class Entry:
    """A cache key that points at a blob."""

    key: str
    sha256: str
    size: int
    stored_at: float          # when this content entered the store
    checked_at: float         # when upstream last confirmed it (volatile files)
    etag: str | None = None   # upstream's validators, for conditional requests
    last_modified: str | None = None


class Store(Protocol):
    def lookup(self, key: str) -> Entry | None:
        """The entry for a key, from memory (no I/O)."""

    def blob_path(self, sha256: str) -> Path: ...

    def open_blob(self, sha256: str) -> BinaryIO: ...

    def new_temp(self) -> Path:
        """A fresh temporary file path inside the store (same file system)."""

    async def commit(self, temp: Path, entry: Entry, synced: bool = False) -> Entry:
        """fsync `temp` (unless `synced`), move it to its blob path, record `entry`."""

    async def mark_checked(self, key: str, when: float) -> None: ...

    async def add_vouches(self, vouches: Iterable[Vouch]) -> int: ...

    async def vouch_for(self, key: str) -> Vouch | None: ...

    async def close(self) -> None: ...
