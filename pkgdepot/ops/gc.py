"""`pkgdepot gc`: delete unreferenced blobs, then enforce `cache.max_size`.

Safe beside a running server and a sync: a blob younger than the grace
period is never collected (its reference may be about to be recorded), the
eviction removes a blob only in the catalog transaction that drops its last
entry, and a server that finds a blob gone fetches the file again.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from pkgdepot.config import Config
from pkgdepot.ops.evict import EvictionResult, Evictor
from pkgdepot.progress import Progress, human_bytes
from pkgdepot.store.fs import FsStore

#: a command beside the server does not know what it serves right now: files
#: used within min(--grace, this many seconds) are not evicted
EVICT_RECENT = 60.0


@dataclass(frozen=True, slots=True)
class GcResult:
    files: int
    bytes: int
    eviction: EvictionResult | None

    def summary(self) -> str:
        lines = [f"{self.files} unreferenced blob(s) deleted ({human_bytes(self.bytes)})"]
        if self.eviction is None:
            lines.append("no size limit (cache.max_size = 0)")
        else:
            lines.append(self.eviction.summary())
        return "\n".join(lines)


def _forget_stale_access(db: sqlite3.Connection) -> None:
    """Last-use times of entries that are gone (refetched under another
    blob, dropped by an index) are of no use."""
    with db:
        db.execute("DELETE FROM access WHERE key NOT IN (SELECT key FROM entries)")


async def collect(store: FsStore, config: Config, grace: float) -> GcResult:
    dirs = sum(1 for d in store.blobs.iterdir() if d.is_dir() and not d.is_symlink())
    with Progress("gc: scanning blobs", dirs, unit="dirs") as bar:
        files, size = await store.collect_garbage(grace=grace, on_dir=lambda: bar.advance(1))
    await store.run_db(_forget_stale_access)
    eviction = None
    if config.max_size > 0:
        mirrors = frozenset(r.name for r in config.repos.values() if r.mirror)
        evictor = Evictor(store, config.max_size, mirrors, recent=min(grace, EVICT_RECENT))
        eviction = await evictor.run(show_progress=True)
    return GcResult(files, size, eviction)
