"""`pkgdepot repair-catalog`: a new catalog from a damaged one.

The damaged file (with its -wal and -shm) is moved aside, never deleted.
Every row that SQLite can still read is carried over: cached entries whose
blob is intact, what indices vouch for, and snapshots whose every file is in
the store (a snapshot missing a file is left out whole, so no partial state
is published). Blobs are content-addressed, so nothing else is lost: cached
files that the catalog no longer names are fetched again on demand (or
reused by hash), and a mirror sync publishes its repository again without
downloading the packages the store already holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pkgdepot.errors import StoreError
from pkgdepot.snapshots import Snapshots
from pkgdepot.store.fs import FsStore, connect_read_only

log = logging.getLogger(__name__)
TABLES = ("entries", "vouches", "snapshots", "snapshot_files", "tags")


@dataclass
class RepairReport:
    moved_to: Path | None
    salvaged: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    entries_without_blob: int = 0
    incomplete_snapshots: int = 0
    bad_blobs: int = 0

    def summary(self) -> str:
        lines = []
        if self.moved_to is not None:
            lines.append(f"the damaged catalog was moved to {self.moved_to}")
        lines.append("rows carried over: " + ", ".join(
            f"{t} {self.salvaged.get(t, 0)}" for t in TABLES))
        if self.unreadable:
            lines.append("could not be read (partly or at all): " + ", ".join(self.unreadable))
        if self.entries_without_blob:
            lines.append(f"{self.entries_without_blob} cached entries had no intact blob "
                         "(fetched again on demand)")
        if self.incomplete_snapshots:
            lines.append(f"{self.incomplete_snapshots} snapshots missed files and were left "
                         "out; run `pkgdepot mirror sync` to publish mirrors again (packages "
                         "already in the store are not downloaded again)")
        if self.bad_blobs:
            lines.append(f"{self.bad_blobs} blobs did not match their hash and were removed")
        return "\n".join(lines)


def _rows(db: sqlite3.Connection, table: str, report: RepairReport) -> Iterator[tuple[object, ...]]:
    """Every row SQLite can read, until the first damaged page."""
    try:
        for row in db.execute(f"SELECT * FROM {table}"):
            yield tuple(row)
    except sqlite3.DatabaseError as e:
        log.warning("%s: read stopped: %s", table, e)
        report.unreadable.append(table)


def _salvage(path: Path, report: RepairReport) -> dict[str, list[tuple[object, ...]]]:
    out: dict[str, list[tuple[object, ...]]] = {t: [] for t in TABLES}
    try:
        db = connect_read_only(path)
    except sqlite3.DatabaseError:
        report.unreadable.extend(TABLES)
        return out
    try:
        for t in TABLES:
            out[t] = list(_rows(db, t, report))
    finally:
        db.close()
    return out


def _move_aside(catalog: Path) -> Path:
    dest = catalog.with_name(f"{catalog.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(catalog, dest)
    for suffix in ("-wal", "-shm"):
        side = catalog.with_name(catalog.name + suffix)
        if side.exists():
            os.replace(side, dest.with_name(dest.name + suffix))
    return dest


def _check_unlocked(catalog: Path) -> None:
    """Refuse while another process (a running server) holds the catalog."""
    try:
        db = sqlite3.connect(catalog, timeout=1, isolation_level=None)
    except sqlite3.DatabaseError:
        return
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise StoreError(f"the catalog {catalog} is in use by another process",
                             hint="stop pkgdepot serve (and any sync) first") from e
    except sqlite3.DatabaseError:
        pass
    finally:
        db.close()


def _verify_blobs(store: FsStore) -> int:
    bad = 0
    for sub in store.blobs.iterdir():
        if not sub.is_dir() or sub.is_symlink():
            continue
        for blob in sub.iterdir():
            h = hashlib.sha256()
            with open(blob, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            if h.hexdigest() != blob.name:
                blob.unlink()
                bad += 1
    return bad


def _intact(store: FsStore, sha: object, size: object) -> bool:
    try:
        return isinstance(sha, str) and os.stat(store.blob_path(sha)).st_size == size
    except OSError:
        return False


async def _rebuild(store: FsStore, rows: dict[str, list[tuple[object, ...]]],
                   report: RepairReport) -> None:
    await Snapshots(store).open()
    entries: list[tuple[object, ...]] = [
        r for r in rows["entries"] if len(r) == 7 and _intact(store, r[1], r[2])]
    report.entries_without_blob = len(rows["entries"]) - len(entries)
    files: dict[tuple[object, object], list[tuple[object, ...]]] = {}
    for r in rows["snapshot_files"]:
        files.setdefault((r[0], r[2]), []).append(r)
    good = set()
    # a snapshot whose file list could not be read whole cannot be told complete
    readable = "snapshot_files" not in report.unreadable
    for r in rows["snapshots"] if readable else ():
        own = files.get((r[1], r[0]), [])
        if all(f[3] is None or _intact(store, f[3], f[4]) for f in own):
            good.add(r[0])
    # a snapshot lists only what changed: it needs every earlier one of its repo too
    complete = set()
    for repo in {r[1] for r in rows["snapshots"]}:
        own_snaps = [r for r in rows["snapshots"] if r[1] == repo]
        for r in sorted(own_snaps, key=lambda r: int(str(r[0]))):
            if r[0] not in good:
                break
            complete.add(r[0])
    report.incomplete_snapshots = len(rows["snapshots"]) - len(complete)
    keep: dict[str, list[tuple[object, ...]]] = {
        "entries": entries,
        "vouches": rows["vouches"],
        "snapshots": [r for r in rows["snapshots"] if r[0] in complete],
        "snapshot_files": [r for r in rows["snapshot_files"] if r[2] in complete],
        "tags": [r for r in rows["tags"] if r[2] in complete],
    }

    def write(db: sqlite3.Connection) -> None:
        with db:
            db.execute("BEGIN")
            for table, items in keep.items():
                for r in items:
                    marks = ",".join("?" * len(r))
                    with contextlib.suppress(sqlite3.IntegrityError):
                        db.execute(f"INSERT INTO {table} VALUES ({marks})", r)
                report.salvaged[table] = len(items)

    await store.run_db(write)


def repair(data_dir: Path, verify_blobs: bool = False) -> RepairReport:
    """Build a new catalog for `data_dir` from what the old one still holds."""
    store = FsStore(data_dir)
    catalog = store.catalog
    if not store.blobs.is_dir():
        raise StoreError(f"no depot data in {data_dir} (no blobs/ directory)",
                         hint="pass --data-dir DIR of the depot")
    rows: dict[str, list[tuple[object, ...]]] = {t: [] for t in TABLES}
    report = RepairReport(None)
    if catalog.exists():
        _check_unlocked(catalog)
        report.moved_to = _move_aside(catalog)
        rows = _salvage(report.moved_to, report)
    if verify_blobs:
        report.bad_blobs = _verify_blobs(store)

    async def run() -> None:
        store.open(recover=False)
        try:
            await _rebuild(store, rows, report)
        finally:
            await store.close()

    asyncio.run(run())
    return report
