"""The size limit (`cache.max_size`): least recently used cache files go first.

When the store holds more than the limit, cache entries and their blobs are
removed, least recently used first, until it is back under 90 % of it:

1. first files that no current index vouches for (superseded versions, old
   indices) and that no snapshot references;
2. then other cache files (still listed by a current index: a client that
   asks again gets them from upstream once more).

Never removed: a blob that any snapshot's metadata references (metadata is
small; `pkgdepot snapshot prune` retires old states), a package that a
tagged snapshot's index lists, anything of a mirror (its published state is
served without upstream), a file being served or downloaded, and anything
used or written within the last `recent` seconds.

Last use comes from the catalog's `access` table, which the server fills in
batches (see FsStore.flush_access); an entry never read since it was stored
counts from when it was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pkgdepot import formats
from pkgdepot.errors import FormatError
from pkgdepot.progress import Progress, human_bytes
from pkgdepot.snapshots import Snapshots
from pkgdepot.store import repo_key
from pkgdepot.store.fs import FsStore

log = logging.getLogger(__name__)

LOW_WATER = 0.9          # evict down to this share of the limit (no thrashing at the edge)
BATCH = 200              # blobs removed per catalog transaction


@dataclass(slots=True)
class Candidate:
    """One blob and the cache entries that point at it."""

    sha256: str
    size: int
    keys: list[str] = field(default_factory=list)
    last_use: float = 0.0
    vouched: bool = False


@dataclass(slots=True)
class EvictionResult:
    limit: int
    usage_before: int
    usage_after: int
    files: int = 0
    entries: int = 0
    bytes: int = 0

    def summary(self) -> str:
        head = (f"store {human_bytes(self.usage_after)} of {human_bytes(self.limit)} "
                f"(limit cache.max_size)")
        if not self.files:
            return head + ("" if self.usage_after <= self.limit else
                           "; nothing more may be evicted (tagged snapshots, mirrors, "
                           "files in use)")
        return (f"{head}; evicted {self.files} least recently used file(s), "
                f"{human_bytes(self.bytes)} ({self.entries} cache entries)")


def store_usage(store: FsStore) -> int:
    """Bytes of every blob and unfinished download (blocking: a directory walk)."""
    total = 0
    for top in (store.blobs, store.tmp):
        for item in walk_files(top):
            with contextlib.suppress(FileNotFoundError):
                total += item.stat(follow_symlinks=False).st_size
    return total


def walk_files(top: Path) -> Iterator[os.DirEntry[str]]:
    with contextlib.suppress(FileNotFoundError), os.scandir(top) as it:
        for item in it:
            if item.is_dir(follow_symlinks=False):
                yield from walk_files(Path(item.path))
            elif item.is_file(follow_symlinks=False):
                yield item


def _candidates(db: sqlite3.Connection) -> dict[str, Candidate]:
    out: dict[str, Candidate] = {}
    for key, sha, size, last, vouched in db.execute(
            "SELECT e.key, e.sha256, e.size, max(e.stored_at, COALESCE(a.at, 0)), "
            "v.key IS NOT NULL AND (v.algo != 'sha256' OR v.digest = e.sha256) "
            "FROM entries e LEFT JOIN access a ON a.key = e.key "
            "LEFT JOIN vouches v ON v.key = e.key"):
        c = out.get(sha)
        if c is None:
            c = out[sha] = Candidate(sha, size)
        c.keys.append(key)
        c.last_use = max(c.last_use, last)
        c.vouched = c.vouched or bool(vouched)
    return out


def _snapshot_blobs(db: sqlite3.Connection) -> set[str]:
    with contextlib.suppress(sqlite3.OperationalError):  # no snapshot table yet
        return {r[0] for r in db.execute(
            "SELECT DISTINCT sha256 FROM snapshot_files WHERE sha256 IS NOT NULL")}
    return set()


def _tagged(db: sqlite3.Connection) -> list[tuple[str, int]]:
    with contextlib.suppress(sqlite3.OperationalError):
        return [(r[0], r[1]) for r in db.execute(
            "SELECT DISTINCT repo, snapshot FROM tags ORDER BY repo, snapshot")]
    return []


class Evictor:
    """Keeps the store under `limit` bytes.

    `busy(key, sha256)` says whether a file is being served or downloaded
    right now (the server knows; a command beside it relies on `recent`)."""

    def __init__(self, store: FsStore, limit: int, mirrors: frozenset[str] = frozenset(),
                 busy: Callable[[str, str], bool] | None = None, recent: float = 60.0,
                 on_removed: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.limit = limit
        self.mirror_prefixes = tuple(repo_key(m) for m in sorted(mirrors))
        self.busy = busy or (lambda key, sha: False)
        self.recent = recent
        self.on_removed = on_removed or (lambda sha: None)
        self.snapshots = Snapshots(store)
        #: index blob -> (package keys relative to the repository, package sha256s)
        self._parsed: dict[str, tuple[frozenset[str], frozenset[str]]] = {}

    async def usage(self) -> int:
        return await asyncio.to_thread(store_usage, self.store)

    async def run(self, usage: int | None = None, show_progress: bool = False
                  ) -> EvictionResult:
        """Evict if the store is over the limit; what was done."""
        await self.store.flush_access()
        if usage is None:
            usage = await self.usage()
        result = EvictionResult(self.limit, usage, usage)
        if self.limit <= 0 or usage <= self.limit:
            return result
        order = await self._plan()
        target = int(self.limit * LOW_WATER)
        need = usage - target
        chosen: list[Candidate] = []
        planned = 0
        for c in order:
            if planned >= need:
                break
            chosen.append(c)
            planned += c.size
        bar = Progress("evict", planned) if show_progress else None
        with bar or contextlib.nullcontext():
            for i in range(0, len(chosen), BATCH):
                batch = [c for c in chosen[i:i + BATCH]
                         if not any(self.busy(k, c.sha256) for k in c.keys)]
                removed = await self.store.run_db(functools.partial(self._remove, batch=batch))
                for c, keys, freed in removed:
                    for k in keys:
                        self.store.evict(k)
                    if not freed:
                        continue
                    self.on_removed(c.sha256)
                    result.files += 1
                    result.entries += len(keys)
                    result.bytes += c.size
                    if bar is not None:
                        bar.advance(c.size)
        result.usage_after = usage - result.bytes
        if result.files:
            log.info("cache.max_size: %s", result.summary())
        return result

    async def _plan(self) -> list[Candidate]:
        """Removable blobs in the order they go: not vouched before vouched,
        least recently used first."""
        await self.snapshots.open()
        cands = await self.store.run_db(_candidates)
        snap_blobs = await self.store.run_db(_snapshot_blobs)
        keep_keys, keep_shas = await self._tagged_packages()
        cutoff = time.time() - self.recent
        order = [c for c in cands.values()
                 if c.sha256 not in snap_blobs and c.sha256 not in keep_shas
                 and c.last_use < cutoff
                 and not any(k in keep_keys or k.startswith(self.mirror_prefixes)
                             for k in c.keys)]
        order.sort(key=lambda c: (c.vouched, c.last_use))
        return order

    async def _tagged_packages(self) -> tuple[set[str], set[str]]:
        """Cache keys and sha256s of the packages that tagged snapshots' indices list."""
        keys: set[str] = set()
        shas: set[str] = set()
        for repo, sid in await self.store.run_db(_tagged):
            manifest = await self.snapshots.manifest(repo, sid)
            seen_stems: set[str] = set()
            for path, (sha, _size) in sorted(manifest.items()):
                found = formats.classify(path)
                stem = formats.split_compression(path)[0]
                if found is None or stem in seen_stems or "/by-hash/" in path \
                        or not found[0].is_package_index(path):
                    continue
                seen_stems.add(stem)
                parsed = self._parsed.get(sha)
                if parsed is None:
                    parsed = await asyncio.to_thread(self._parse, found[0], path, sha)
                    self._parsed[sha] = parsed
                keys |= {repo_key(repo, loc) for loc in parsed[0]}
                shas |= parsed[1]
        return keys, shas

    def _parse(self, backend: formats.Backend, path: str, sha: str
               ) -> tuple[frozenset[str], frozenset[str]]:
        locations: set[str] = set()
        digests: set[str] = set()
        try:
            for p in backend.packages(path, self.store.blob_path(sha)):
                locations.add(p.location)
                if p.digest is not None and p.digest.algo == "sha256":
                    digests.add(p.digest.hexdigest)
        except (OSError, ValueError, EOFError, FormatError) as e:
            log.warning("%s: cannot read a tagged snapshot's index (%s)", path, e)
        return frozenset(locations), frozenset(digests)

    def _remove(self, db: sqlite3.Connection, batch: list[Candidate]
                ) -> list[tuple[Candidate, list[str], bool]]:
        """Drop the entries and, where nothing else points at it, the blob; in
        one transaction, so that no other process's entry for the blob is
        recorded in between. (candidate, keys dropped, blob removed)."""
        removed: list[tuple[Candidate, list[str], bool]] = []
        cutoff = time.time() - self.recent
        with db:
            db.execute("BEGIN IMMEDIATE")
            for c in batch:
                blob = self.store.blob_path(c.sha256)
                try:
                    if blob.lstat().st_mtime > cutoff:
                        continue  # just written or reused by someone: keep
                except FileNotFoundError:
                    pass
                keys = [k for k in c.keys if db.execute(
                    "DELETE FROM entries WHERE key=? AND sha256=?", (k, c.sha256)).rowcount]
                db.executemany("DELETE FROM access WHERE key=?", [(k,) for k in keys])
                freed = db.execute("SELECT 1 FROM entries WHERE sha256=? LIMIT 1",
                                   (c.sha256,)).fetchone() is None
                if freed:
                    blob.unlink(missing_ok=True)
                removed.append((c, keys, freed))
        return removed


__all__ = ["EvictionResult", "Evictor", "store_usage"]
