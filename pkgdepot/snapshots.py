"""Snapshots: every published state of a repository's metadata, reachable by
time or by tag.

A snapshot is a manifest of metadata paths to blobs. Manifests are stored as
deltas: the row (repo, path, snapshot) says that from this snapshot on, the
path holds this blob (or, with no blob, is gone). A path's content in
snapshot S is the row with the greatest snapshot id <= S. So a new snapshot
costs one row per changed file, whatever the number of packages or of earlier
snapshots, and no package is ever copied: packages stay in the pool.

Timestamps are whole UTC seconds; a point in time resolves to the newest
snapshot not later than it. Several changes within one second make one state
(the last), unless the earlier one is tagged: then both stay, the newer one
reachable by time and the tagged one by its tag.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pkgdepot.errors import BadRequest, NotFound
from pkgdepot.store.fs import FsStore, connect_read_only

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    created INTEGER NOT NULL,
    kind TEXT NOT NULL
);
DROP INDEX IF EXISTS snapshots_repo_created;
CREATE INDEX IF NOT EXISTS snapshots_repo_time ON snapshots(repo, created, id);
CREATE TABLE IF NOT EXISTS snapshot_files (
    repo TEXT NOT NULL,
    path TEXT NOT NULL,
    snapshot INTEGER NOT NULL,
    sha256 TEXT,
    size INTEGER,
    PRIMARY KEY (repo, path, snapshot)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS snapshot_files_snapshot ON snapshot_files(repo, snapshot);
CREATE TABLE IF NOT EXISTS tags (
    repo TEXT NOT NULL,
    name TEXT NOT NULL,
    snapshot INTEGER NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (repo, name)
);
"""

STAMP_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$")
TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
FileRef = tuple[str, int]  # (sha256, size)


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_stamp(text: str) -> int:
    m = STAMP_RE.match(text)
    if not m:
        raise BadRequest(f"{text!r} is not a time in the form YYYYMMDDTHHMMSSZ")
    try:
        y, mo, d, h, mi, s = (int(g) for g in m.groups())
        dt = datetime(y, mo, d, h, mi, s, tzinfo=UTC)
    except ValueError as e:
        raise BadRequest(f"{text!r} is not a valid time: {e}") from e
    return int(dt.timestamp())


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: int
    repo: str
    created: int
    kind: str
    tags: tuple[str, ...] = ()

    @property
    def stamp(self) -> str:
        return stamp(self.created)

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "repo": self.repo, "timestamp": self.stamp,
                "created": self.created, "kind": self.kind, "tags": list(self.tags)}


def _snap(row: tuple[int, str, int, str], tags: tuple[str, ...] = ()) -> Snapshot:
    return Snapshot(row[0], row[1], row[2], row[3], tags)


class Snapshots:
    """Snapshot records in the catalog. All database work runs on the store's
    catalog thread."""

    def __init__(self, store: FsStore) -> None:
        self.store = store
        self._opened = False

    async def open(self) -> Snapshots:
        if not self._opened:
            await self.store.run_db(lambda db: db.executescript(SCHEMA))
            self._opened = True
        return self

    # -- writing -----------------------------------------------------------

    async def record(self, repo: str, changes: Mapping[str, FileRef | None], kind: str,
                     when: float | None = None) -> Snapshot | None:
        """A new snapshot with these changes on top of the latest one; None (and
        nothing written) when they change nothing."""
        now = int(time.time() if when is None else when)

        def run(db: sqlite3.Connection) -> Snapshot | None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                latest = _latest(db, repo)
                real = {p: ref for p, ref in changes.items()
                        if _view(db, repo, p, latest.id if latest else None) != ref}
                if not real:
                    return None
                rows = [(p, ref[0] if ref else None, ref[1] if ref else None)
                        for p, ref in real.items()]
                if latest is not None and now <= latest.created:
                    tagged = db.execute("SELECT 1 FROM tags WHERE snapshot=?",
                                        (latest.id,)).fetchone()
                    if not tagged and latest.kind == kind:
                        # the same second: this is the state of that second
                        db.executemany("INSERT OR REPLACE INTO snapshot_files VALUES "
                                       "(?,?,?,?,?)", [(repo, p, latest.id, s, n)
                                                       for p, s, n in rows])
                        return latest
                created = max(now, latest.created) if latest else now
                cur = db.execute("INSERT INTO snapshots (repo, created, kind) VALUES (?,?,?)",
                                 (repo, created, kind))
                sid = int(cur.lastrowid or 0)
                db.executemany("INSERT INTO snapshot_files VALUES (?,?,?,?,?)",
                               [(repo, p, sid, s, n) for p, s, n in rows])
                return Snapshot(sid, repo, created, kind)

        return await self.store.run_db(run)

    async def complete_latest(self, repo: str, path: str, ref: FileRef) -> bool:
        """Add a file to the latest snapshot (one its release file vouches for and
        that had not been seen yet): the snapshot's state is unchanged, only more
        complete. False when there is no snapshot yet or it already has the file."""

        def run(db: sqlite3.Connection) -> bool:
            with db:
                db.execute("BEGIN IMMEDIATE")
                latest = _latest(db, repo)
                if latest is None or _view(db, repo, path, latest.id) == ref:
                    return False
                db.execute("INSERT OR REPLACE INTO snapshot_files VALUES (?,?,?,?,?)",
                           (repo, path, latest.id, ref[0], ref[1]))
                return True

        return await self.store.run_db(run)

    # -- reading -----------------------------------------------------------

    async def latest(self, repo: str) -> Snapshot | None:
        return await self.store.run_db(lambda db: _latest(db, repo))

    async def history(self, repo: str) -> list[Snapshot]:
        """Every snapshot of a repository, newest first, with its tags."""

        def run(db: sqlite3.Connection) -> list[Snapshot]:
            tags: dict[int, list[str]] = {}
            for name, sid in db.execute("SELECT name, snapshot FROM tags WHERE repo=? "
                                        "ORDER BY name", (repo,)):
                tags.setdefault(sid, []).append(name)
            rows = db.execute("SELECT id, repo, created, kind FROM snapshots WHERE repo=? "
                              "ORDER BY created DESC, id DESC", (repo,)).fetchall()
            return [_snap(r, tuple(tags.get(r[0], ()))) for r in rows]

        return await self.store.run_db(run)

    async def repos(self) -> list[str]:
        return await self.store.run_db(lambda db: [
            r[0] for r in db.execute("SELECT DISTINCT repo FROM snapshots ORDER BY repo")])

    async def resolve(self, repo: str, when: str) -> Snapshot:
        """`latest`, a tag, or YYYYMMDDTHHMMSSZ (the newest snapshot not later)."""

        def run(db: sqlite3.Connection) -> Snapshot:
            if when == "latest":
                snap = _latest(db, repo)
                if snap is None:
                    raise NotFound(f"repository {repo!r} has no snapshot yet")
                return snap
            if STAMP_RE.match(when):
                ts = parse_stamp(when)
                row = db.execute("SELECT id, repo, created, kind FROM snapshots WHERE repo=? "
                                 "AND created<=? ORDER BY created DESC, id DESC LIMIT 1",
                                 (repo, ts)).fetchone()
                if row is None:
                    first = db.execute("SELECT MIN(created) FROM snapshots WHERE repo=?",
                                       (repo,)).fetchone()[0]
                    if first is None:
                        raise NotFound(f"repository {repo!r} has no snapshot yet")
                    raise NotFound(f"{when} is earlier than the first snapshot of {repo!r} "
                                   f"({stamp(first)})")
                return _snap(row)
            if not TAG_RE.match(when):
                raise BadRequest(f"{when!r} is neither a time (YYYYMMDDTHHMMSSZ), a tag "
                                 "nor 'latest'")
            row = db.execute("SELECT s.id, s.repo, s.created, s.kind FROM tags t JOIN "
                             "snapshots s ON s.id = t.snapshot WHERE t.repo=? AND t.name=?",
                             (repo, when)).fetchone()
            if row is None:
                raise NotFound(f"repository {repo!r} has no tag {when!r}")
            return _snap(row)

        return await self.store.run_db(run)

    async def file(self, repo: str, snapshot: int, path: str) -> FileRef | None:
        return await self.store.run_db(lambda db: _view(db, repo, path, snapshot))

    async def manifest(self, repo: str, snapshot: int) -> dict[str, FileRef]:
        """Every path of a snapshot with its blob."""

        def run(db: sqlite3.Connection) -> dict[str, FileRef]:
            out: dict[str, FileRef] = {}
            for path, sha, size in db.execute(
                    "SELECT f.path, f.sha256, f.size FROM snapshot_files f "
                    "WHERE f.repo=? AND f.snapshot = (SELECT MAX(g.snapshot) FROM "
                    "snapshot_files g WHERE g.repo=f.repo AND g.path=f.path AND g.snapshot<=?)",
                    (repo, snapshot)):
                if sha is not None:
                    out[path] = (sha, size)
            return out

        return await self.store.run_db(run)

    # -- tags --------------------------------------------------------------

    async def tag(self, repo: str, name: str, when: str) -> Snapshot:
        if not TAG_RE.match(name) or name == "latest":
            raise BadRequest(f"{name!r} is not a valid tag: letters, digits, '.', '_' and "
                             "'-', starting with a letter, and not 'latest'")
        snap = await self.resolve(repo, when)

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute("INSERT OR REPLACE INTO tags VALUES (?,?,?,?)",
                           (repo, name, snap.id, int(time.time())))

        await self.store.run_db(run)
        return snap

    async def untag(self, repo: str, name: str) -> None:
        def run(db: sqlite3.Connection) -> int:
            with db:
                return db.execute("DELETE FROM tags WHERE repo=? AND name=?",
                                  (repo, name)).rowcount

        if not await self.store.run_db(run):
            raise NotFound(f"repository {repo!r} has no tag {name!r}")

    # -- pruning -----------------------------------------------------------

    async def prune(self, repo: str, older_than: float, keep_last: int = 1) -> list[Snapshot]:
        """Remove untagged snapshots created before `older_than`, keeping at least
        the newest `keep_last`. A removed snapshot's rows that a later snapshot
        still inherits move to its successor, so no remaining view changes."""

        def run(db: sqlite3.Connection) -> list[Snapshot]:
            removed: list[Snapshot] = []
            with db:
                db.execute("BEGIN IMMEDIATE")
                snaps = [_snap(r) for r in db.execute(
                    "SELECT id, repo, created, kind FROM snapshots WHERE repo=? "
                    "ORDER BY created, id", (repo,))]
                tagged = {r[0] for r in db.execute("SELECT snapshot FROM tags WHERE repo=?",
                                                    (repo,))}
                protected = {s.id for s in snaps[-max(keep_last, 1):]}
                for i, s in enumerate(snaps):
                    if s.id in tagged or s.id in protected or s.created >= older_than:
                        continue
                    successor = snaps[i + 1]  # exists: the newest is always protected
                    for path, sha, size in db.execute(
                            "SELECT path, sha256, size FROM snapshot_files WHERE repo=? "
                            "AND snapshot=?", (repo, s.id)).fetchall():
                        db.execute("INSERT OR IGNORE INTO snapshot_files VALUES (?,?,?,?,?)",
                                   (repo, path, successor.id, sha, size))
                    db.execute("DELETE FROM snapshot_files WHERE repo=? AND snapshot=?",
                               (repo, s.id))
                    db.execute("DELETE FROM snapshots WHERE id=?", (s.id,))
                    removed.append(s)
                    # the successor now stands for this range of time as well
                    snaps[i + 1] = successor
            return removed

        return await self.store.run_db(run)


def has_snapshot(store: FsStore, repo: str) -> bool:
    """Whether `repo` has a snapshot, read straight from the store's catalog
    file, which need not be open (for a decision made before a sync starts).
    False when there is no catalog yet or it cannot be read."""
    if not store.catalog.exists():
        return False
    try:
        with contextlib.closing(connect_read_only(store.catalog)) as db:
            return db.execute("SELECT 1 FROM snapshots WHERE repo=? LIMIT 1",
                              (repo,)).fetchone() is not None
    except sqlite3.Error:
        return False


def _latest(db: sqlite3.Connection, repo: str) -> Snapshot | None:
    row = db.execute("SELECT id, repo, created, kind FROM snapshots WHERE repo=? "
                     "ORDER BY created DESC, id DESC LIMIT 1", (repo,)).fetchone()
    return None if row is None else _snap(row)


def _view(db: sqlite3.Connection, repo: str, path: str, snapshot: int | None) -> FileRef | None:
    if snapshot is None:
        return None
    row = db.execute("SELECT sha256, size FROM snapshot_files WHERE repo=? AND path=? AND "
                     "snapshot<=? ORDER BY snapshot DESC LIMIT 1",
                     (repo, path, snapshot)).fetchone()
    if row is None or row[0] is None:
        return None
    return (row[0], row[1])
