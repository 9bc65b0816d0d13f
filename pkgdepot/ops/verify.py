"""`pkgdepot verify [--repair]`: re-hash every blob of the store.

A blob is named by the sha256 of its content; one whose content hashes
otherwise (bit rot, a disk error, a hand edit) is reported with what uses
it. Cache entries whose blob is missing or has another size are reported
too. `--repair` deletes each bad blob and the cache entries that point at
it (and entries without an intact blob), so that the next request fetches
the file from upstream again. Snapshot metadata that pointed at a bad blob
is reported: it comes back only if the same content is fetched again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from pkgdepot.ops.evict import walk_files
from pkgdepot.progress import Progress, human_bytes
from pkgdepot.store.fs import FsStore

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20
STEP = 64 << 20  # bytes hashed per thread hop


@dataclass(slots=True)
class BadBlob:
    path: Path
    sha256: str
    actual: str            # what the content hashes to ("" for a stray file)
    size: int
    keys: list[str] = field(default_factory=list)
    snapshot_paths: list[str] = field(default_factory=list)

    def describe(self) -> str:
        what = (f"content hashes to {self.actual}" if self.actual
                else "not a blob name (stray file)")
        used = []
        if self.keys:
            used.append(f"cache entries: {', '.join(self.keys[:5])}"
                        + (f" and {len(self.keys) - 5} more" if len(self.keys) > 5 else ""))
        if self.snapshot_paths:
            used.append(f"snapshot metadata: {', '.join(self.snapshot_paths[:5])}")
        return (f"BAD blob {self.sha256}: {what} ({self.size} bytes)"
                + ("; used by " + "; ".join(used) if used else "; unreferenced"))


@dataclass(slots=True)
class VerifyResult:
    blobs: int = 0
    bytes: int = 0
    bad: list[BadBlob] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)   # entry keys without an intact blob
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not self.bad and not self.missing

    def report(self) -> str:
        lines = [b.describe() for b in self.bad]
        lines += [f"MISSING blob for cache entry {k}" for k in self.missing[:50]]
        if len(self.missing) > 50:
            lines.append(f"... and {len(self.missing) - 50} more entries without a blob")
        verdict = "all intact" if self.ok else (
            f"{len(self.bad)} bad blob(s), {len(self.missing)} entry(ies) without a blob")
        lines.append(f"verified {self.blobs} blob(s), {human_bytes(self.bytes)}: {verdict}")
        if not self.ok:
            lines.append("repaired: bad blobs and their entries were deleted; the next request "
                         "fetches them again" if self.repaired else
                         "run `pkgdepot verify --repair` to delete them (clients then get "
                         "fresh copies from upstream)")
        return "\n".join(lines)


def _blobs(store: FsStore) -> list[tuple[Path, int]]:
    out = []
    for item in walk_files(store.blobs):
        with contextlib.suppress(FileNotFoundError):
            out.append((Path(item.path), item.stat(follow_symlinks=False).st_size))
    return sorted(out)


def _hash_some(paths: list[tuple[Path, int]]) -> list[tuple[Path, int, str | None]]:
    """(path, size, sha256 or None when it vanished meanwhile)."""
    out: list[tuple[Path, int, str | None]] = []
    for path, size in paths:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        except FileNotFoundError:
            out.append((path, size, None))  # collected or evicted meanwhile: fine
            continue
        out.append((path, size, h.hexdigest()))
    return out


def _references(db: sqlite3.Connection, bad: list[BadBlob]) -> None:
    for b in bad:
        b.keys = [r[0] for r in db.execute("SELECT key FROM entries WHERE sha256=?",
                                           (b.sha256,))]
        with contextlib.suppress(sqlite3.OperationalError):
            b.snapshot_paths = [f"{r[0]}/{r[1]}" for r in db.execute(
                "SELECT DISTINCT repo, path FROM snapshot_files WHERE sha256=?", (b.sha256,))]


def _missing(db: sqlite3.Connection, sizes: dict[str, int]) -> list[str]:
    return [key for key, sha, size in db.execute("SELECT key, sha256, size FROM entries")
            if sizes.get(sha) != size]


async def verify(store: FsStore, repair: bool = False) -> VerifyResult:
    result = VerifyResult()
    blobs = await asyncio.to_thread(_blobs, store)
    total = sum(size for _p, size in blobs)
    sizes: dict[str, int] = {}
    with Progress("verify", total) as bar:
        i = 0
        while i < len(blobs):
            step: list[tuple[Path, int]] = []
            amount = 0
            while i < len(blobs) and (not step or amount < STEP):
                step.append(blobs[i])
                amount += blobs[i][1]
                i += 1
            for path, size, actual in await asyncio.to_thread(_hash_some, step):
                bar.advance(size)
                if actual is None:
                    continue
                result.blobs += 1
                result.bytes += size
                if actual == path.name:
                    sizes[path.name] = size
                else:
                    result.bad.append(BadBlob(path, path.name, actual if SHA_RE.match(path.name)
                                              else "", size))
    await store.run_db(lambda db: _references(db, result.bad))
    result.missing = await store.run_db(lambda db: _missing(db, sizes))
    # an entry recorded during the walk points at a blob placed after it: not missing
    result.missing = [k for k in result.missing
                      if not await _intact_now(store, k)]
    if repair and not result.ok:
        await _repair(store, result)
        result.repaired = True
    return result


async def _intact_now(store: FsStore, key: str) -> bool:
    store.evict(key)
    entry = await store.load(key)
    if entry is None:
        return False
    try:
        return os.stat(store.blob_path(entry.sha256)).st_size == entry.size
    except FileNotFoundError:
        return False


async def _repair(store: FsStore, result: VerifyResult) -> None:
    bad = [b.sha256 for b in result.bad]

    def run(db: sqlite3.Connection) -> None:
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM entries WHERE sha256=?", [(s,) for s in bad])
            db.executemany("DELETE FROM entries WHERE key=?", [(k,) for k in result.missing])
            for b in result.bad:
                b.path.unlink(missing_ok=True)

    await store.run_db(run)
    for k in [*result.missing, *(k for b in result.bad for k in b.keys)]:
        store.evict(k)
