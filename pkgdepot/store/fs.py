"""Blobs on the local file system, catalog in SQLite.

Layout of the data directory:
    blobs/ab/abcdef...      one file per sha256, read-only
    tmp/                    downloads in progress (cleared at start)
    catalog.sqlite          entries (key -> blob) and vouches (key -> hash)
    keyrings/               dearmored copies of configured keyrings

All SQLite work runs on one dedicated thread, in order; the event loop never
blocks on it. Entries are also held in memory so that a cache hit costs no
I/O besides sending the blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import secrets
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pkgdepot import libc
from pkgdepot.errors import StoreError
from pkgdepot.formats import Digest, Vouch
from pkgdepot.store import Entry

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCK_WAIT = 5.0            # seconds to wait for the catalog's lock at start
BUSY_TIMEOUT_MS = 30_000   # and while running
MIN_FREE = 1 << 20         # a download needs its size plus this much free space


def catalog_error(path: Path, e: sqlite3.DatabaseError) -> StoreError:
    """StoreError for an SQLite failure: locked, full or damaged."""
    text = str(e)
    if "locked" in text or "busy" in text:
        return StoreError(f"the catalog {path} is locked by another process ({text})",
                          hint="another pkgdepot serve may use this data directory: stop it "
                               f"(find it with: fuser {path}) and start again")
    if "full" in text:
        return StoreError(f"the data directory's file system is full: the catalog {path} "
                          "cannot be written", hint="free some space; the depot goes on "
                                                    "by itself")
    if isinstance(e, sqlite3.OperationalError) and "malformed" not in text:
        return StoreError(f"the catalog {path} cannot be used: {text}")
    return StoreError(f"the catalog {path} is damaged: {text}",
                      hint=f"stop the depot and run: pkgdepot repair-catalog --data-dir "
                           f"{path.parent} (keeps what can be read, moves the damaged file "
                           "aside)")


def check_free(directory: Path, size: int | None) -> None:
    """StoreError (503) unless the file system of `directory` has room for a
    file of `size` bytes (plus a margin)."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    need = (size or 0) + MIN_FREE
    if free < need:
        raise StoreError(f"the data directory is full ({free} bytes free, {need} needed): "
                         "new files are not fetched until space returns",
                         hint=f"free space on the file system of {directory}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    stored_at REAL NOT NULL,
    checked_at REAL NOT NULL,
    etag TEXT,
    last_modified TEXT
);
CREATE TABLE IF NOT EXISTS vouches (
    key TEXT PRIMARY KEY,
    size INTEGER,
    algo TEXT NOT NULL,
    digest TEXT NOT NULL,
    canonical TEXT
);
CREATE TABLE IF NOT EXISTS access (
    key TEXT PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_sha256 ON entries(sha256);
"""


DIR_MODE = 0o750
CATALOG_FILES = ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm",
                 "catalog.sqlite-journal")


def ensure_dir(path: Path, mode: int = DIR_MODE) -> None:
    """Create `path` (mode 0750 or tighter) or check the existing one: a real
    directory, not a symbolic link planted in its place; group-write and any
    access by others are taken away from a directory the depot owns."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{path} is not a directory (a symbolic link?): refusing to write "
                         "through it", hint=f"remove {path} and start again")
    if st.st_mode & 0o027 and st.st_uid == os.geteuid():
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)


#: up to this many blobs are fsynced one by one; more, with their file system
SYNC_EACH_MAX = 64
#: ... unless the machine has at most this much data not yet written: then
#: one syncfs (one journal commit, about 1 ms) beats two flushes a blob
#: (a 31-file sync: 8-11 ms one by one, 1-2 ms by syncfs, 6 ms with 8 MB
#: of other writes pending)
SYNCFS_UNWRITTEN_MAX = 8 << 20


def unwritten_bytes() -> int | None:
    """Data the kernel has yet to write to disk, machine-wide (Dirty plus
    Writeback of /proc/meminfo); None where that cannot be read."""
    try:
        with open("/proc/meminfo", "rb") as f:
            text = f.read()
    except OSError:
        return None
    total = 0
    for key in (b"\nDirty:", b"\nWriteback:"):
        at = text.find(key)
        if at < 0:
            return None
        fields = text[at + len(key):text.find(b"\n", at + 1)].split()
        if not fields or not fields[0].isdigit():
            return None
        total += int(fields[0]) * 1024  # kB
    return total


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(path: Path) -> None:
    """syncfs(2) on the file system holding `path` (sync(2) where the C
    library lacks it)."""
    import ctypes

    syncfs = libc.function("syncfs")
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


def connect_read_only(catalog: Path) -> sqlite3.Connection:
    """A read-only connection to a catalog file that need not be open
    elsewhere (by URI: the path absolute and escaped, as a file: URI needs)."""
    return sqlite3.connect(catalog.absolute().as_uri() + "?mode=ro", uri=True,
                           isolation_level=None)


def is_blob(path: Path) -> bool:
    """Whether `path` is a stored blob: a regular file, not a planted link."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


class FsStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self.blobs = data_dir / "blobs"
        self.tmp = data_dir / "tmp"
        self.derived = data_dir / "derived"
        self._entries: dict[str, Entry] = {}
        self._shards: set[Path] = set()  # blob shard directories checked by place_many
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="pkgdepot-catalog")
        self._db: sqlite3.Connection | None = None
        #: entries of placed blobs waiting to be recorded together (see `commit`)
        self._committing: list[tuple[Entry, asyncio.Future[Entry]]] = []
        self._committer: asyncio.Task[None] | None = None
        #: key -> when it was last read, not yet written to the catalog (see flush_access)
        self._accessed: dict[str, float] = {}
        #: bytes of new blobs this process placed (the size limit's running estimate)
        self.bytes_placed = 0  # by this process, since it started
        self.files_placed = 0

    # -- opening and recovery --------------------------------------------

    def open(self, recover: bool = True) -> FsStore:
        """Create or open the data directory, clean up after a crash, check
        that every catalog entry still has its blob. Blocking: call before
        serving (or in a thread). With recover=False (commands that run beside
        a live server) nothing is cleaned up and entries are read on demand."""
        try:
            for d in (self.root, self.blobs, self.tmp, self.derived):
                ensure_dir(d)
        except PermissionError as e:
            raise StoreError(f"cannot create the data directory {self.root}: {e.strerror}",
                             hint="run as root, or pass --data-dir DIR that you can write") from e
        for name in CATALOG_FILES:
            if (self.root / name).is_symlink():
                raise StoreError(f"{self.root / name} is a symbolic link: refusing to write "
                                 "the catalog through it",
                                 hint="remove the link (and restore the real catalog)")
        with os.scandir(self.blobs) as shards:  # the type from the listing: no stat each
            for sub in shards:
                if sub.is_symlink():
                    raise StoreError(f"{sub.path} is a symbolic link inside the blob directory: "
                                     "refusing to write through it", hint=f"remove {sub.path}")
        removed = 0
        for p in self.tmp.iterdir() if recover else ():
            if p.is_file() or p.is_symlink():
                p.unlink()
                removed += 1
        if removed:
            log.info("removed %d unfinished download(s) left by an earlier run", removed)
        self._db = self._connect(recover)
        rows = self._guard(lambda: self.db.execute(
            "SELECT key, sha256, size, stored_at, checked_at, etag, last_modified "
            "FROM entries").fetchall()) if recover else []
        dropped = []
        for row in rows:
            ent = Entry(*row)
            try:
                st = os.lstat(self.blob_path(ent.sha256))
            except FileNotFoundError:
                dropped.append(ent.key)
                continue
            if st.st_size != ent.size or not stat.S_ISREG(st.st_mode):
                dropped.append(ent.key)
                continue
            self._entries[ent.key] = ent
        if dropped:
            log.warning("catalog: %d entries had no intact blob and were dropped", len(dropped))
            self._db.executemany("DELETE FROM entries WHERE key=?", [(k,) for k in dropped])
        return self

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.sqlite"

    def _connect(self, check: bool) -> sqlite3.Connection:
        """Open the catalog; a locked or damaged one is a clear error that names
        the file and the way out. With `check`, the file's structure is checked
        and the write lock taken once, so that both show at start, not later."""
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self.catalog, check_same_thread=False,
                                 isolation_level=None, timeout=LOCK_WAIT)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if check:
                bad = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
                if bad != ["ok"]:
                    raise sqlite3.DatabaseError("; ".join(str(b) for b in bad))
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            return db
        except sqlite3.DatabaseError as e:
            if db is not None:
                db.close()
            raise catalog_error(self.catalog, e) from e

    def _guard(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.DatabaseError as e:
            raise catalog_error(self.catalog, e) from e

    async def close(self) -> None:
        if self._committer is not None and not self._committer.done():
            await asyncio.wait([self._committer])
        await self._call(self._close_db)
        self._db_thread.shutdown(wait=True)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _call(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_thread, self._guard, lambda: fn(*args))

    async def run_db(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the catalog's thread, in order with every
        other catalog operation of this process. SQLite's errors (disk full,
        locked, damaged) become StoreError."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_thread, self._guard, lambda: fn(self.db))

    async def load(self, key: str) -> Entry | None:
        """The entry for a key, from memory or else from the catalog (another
        process, such as a mirror sync, may have added it)."""
        entry, _ = await self.load_with_vouch(key, vouch=False)
        return entry

    async def load_with_vouch(self, key: str, vouch: bool = True
                              ) -> tuple[Entry | None, Vouch | None]:
        """`load(key)` and, if the key has no entry, `vouch_for(key)` too: a
        miss asks the catalog both in one trip to its thread."""
        e = self._entries.get(key)
        if e is not None:
            self._accessed[key] = time.time()
            return e, None

        def run() -> tuple[Entry | None, Vouch | None]:
            row = self.db.execute(
                "SELECT key, sha256, size, stored_at, checked_at, etag, last_modified "
                "FROM entries WHERE key=?", (key,)).fetchone()
            if row is not None and is_blob(self.blob_path(row[1])):
                return Entry(*row), None
            return None, self._vouch(key) if vouch else None

        found: tuple[Entry | None, Vouch | None] = await self._call(run)
        if found[0] is not None:
            self._entries[key] = found[0]
            self._accessed[key] = time.time()  # a use like any other (LRU eviction)
        return found

    def place_bytes(self, data: bytes, sha256: str) -> None:
        """Blocking: write verified content as the blob `sha256` (no fsync: the
        caller syncs before anything references it)."""
        self.place_many([(data, sha256)])

    def place_many(self, items: Iterable[tuple[bytes, str]]) -> None:
        """Blocking: write verified contents as blobs, each under its sha256
        (no fsync: the caller syncs before anything references them). Few
        system calls a blob, for mirrors of many small files: each is created
        read-only under a fresh temporary name, written and renamed into
        place; shard directories are checked once per process."""
        for data, sha256 in items:
            self._write_blob(data, sha256, sync=False)

    def _write_blob(self, data: bytes, sha256: str, sync: bool) -> None:
        """Blocking: write `data` as the blob `sha256`: created read-only under
        a fresh temporary name, written, fsynced if `sync`, renamed into place."""
        dest = self.blob_path(sha256)
        if is_blob(dest):
            with contextlib.suppress(FileNotFoundError):
                os.utime(dest, follow_symlinks=False)
                return
        if dest.parent not in self._shards:
            ensure_dir(dest.parent)  # a planted link in a shard's place is refused
            self._shards.add(dest.parent)
        temp = self.tmp / f"put-{sha256[:16]}-{secrets.token_hex(6)}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o444)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, dest)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            self._raise_if_full(e, sha256)
            raise
        self.bytes_placed += len(data)
        self.files_placed += 1

    async def put_bytes(self, data: bytes) -> str:
        """Store small content (generated metadata) as a blob; its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        if is_blob(self.blob_path(sha)):
            return sha

        def write() -> None:
            temp = self.new_temp()
            temp.write_bytes(data)
            self._place(temp, sha)

        await asyncio.to_thread(write)
        return sha

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    # -- blobs -----------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    def open_blob(self, sha256: str) -> BinaryIO:
        """Open a blob for reading, unbuffered; a symbolic link in its place is
        never followed."""
        return os.fdopen(self.open_blob_fd(sha256), "rb", buffering=0)

    def open_blob_fd(self, sha256: str) -> int:
        """A blob's open descriptor (the server keeps thousands for sendfile:
        a bare descriptor costs no memory in the process, a file object about
        1 KB); a symbolic link in its place is never followed."""
        try:
            return os.open(self.blob_path(sha256), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise StoreError(f"{self.blob_path(sha256)} is a symbolic link, not a blob: "
                             "refusing to read through it",
                             hint="remove it; the file is fetched again") from e

    # -- derived data ----------------------------------------------------

    def derived_path(self, kind: str, sha256: str) -> Path:
        """Where data worked out from a blob (say, the package list of an
        index) is kept: as immutable as the blob, dropped with it by GC."""
        return self.derived / kind / sha256

    def put_derived(self, path: Path, data: bytes) -> None:
        """Keep derived data (blocking). Losing it costs only time, so it is
        written without fsync; a crash leaves at worst a temporary behind."""
        ensure_dir(path.parent)
        temp = self.new_temp()
        try:
            temp.write_bytes(data)
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def new_temp(self) -> Path:
        fd, name = tempfile.mkstemp(prefix="dl-", dir=self.tmp)
        os.close(fd)
        return Path(name)

    def _raise_if_full(self, e: OSError, name: str) -> None:
        """A write that failed for want of space becomes the StoreError that
        says so (the caller re-raises anything else)."""
        if e.errno == errno.ENOSPC:
            raise StoreError(f"the data directory is full: {name} not kept",
                             hint=f"free space on the file system of {self.root}") from e

    def sync_blobs(self, shas: Iterable[str]) -> None:
        """Blocking: make these blobs durable, with their names. Many, or a
        few while the machine has little else to write, by syncing the
        store's file system (`syncfs`); a few while other writers have much
        pending, by fsyncing them one by one with the shard directories that
        name them (syncfs would wait for those writers). Never `sync()`,
        which waits for every file system."""
        wanted = set(shas)
        for sha in wanted:  # a state must never name a blob that is not there
            if not is_blob(self.blob_path(sha)):
                raise StoreError(f"blob {sha} is missing from the store",
                                 hint="run `pkgdepot verify` to check the store")
        try:
            if len(wanted) > SYNC_EACH_MAX or (
                    (pending := unwritten_bytes()) is not None
                    and pending <= SYNCFS_UNWRITTEN_MAX):
                _syncfs(self.blobs)
                return
            for sha in sorted(wanted):
                _fsync_path(self.blob_path(sha))
            for shard in sorted({self.blob_path(sha).parent for sha in wanted}):
                _fsync_path(shard)
        except OSError as e:  # a write the file system could not complete after all
            self._raise_if_full(e, "downloaded files")
            raise StoreError(f"the store could not make downloaded files durable: {e}",
                             hint=f"check the file system of {self.root} (dmesg)") from e

    def _place(self, temp: Path, sha256: str, synced: bool = False) -> None:
        """Move a complete temporary file into the store under its hash. The
        file is fsynced first (unless the writer already did) so that after a
        power loss a blob never holds other bytes than its name says. The
        directory is not fsynced: a rename lost with it leaves a catalog entry
        without a blob, which the check at start drops (fetched again later)."""
        dest = self.blob_path(sha256)
        if is_blob(dest):
            try:
                # Already there: a fresh mtime keeps a running garbage collection off it.
                os.utime(dest, follow_symlinks=False)
                temp.unlink(missing_ok=True)
                return
            except FileNotFoundError:
                pass
        try:
            if not synced:
                with open(temp, "rb") as f:
                    os.fsync(f.fileno())
            ensure_dir(dest.parent)  # a planted link in a shard's place is refused
            os.chmod(temp, 0o444)
            os.replace(temp, dest)
        except OSError as e:
            self._raise_if_full(e, dest.name)
            raise
        self.bytes_placed += os.stat(dest).st_size
        self.files_placed += 1

    async def commit(self, temp: Path | bytes, entry: Entry, synced: bool = False) -> Entry:
        """Move `temp` into the store as `entry`'s blob (fsynced first unless
        `synced`), or write it there if it is the content itself, and record
        the entry. Files are placed in parallel (their fsyncs share the file
        system's journal commits); entries that come while others are being
        written are recorded together, in one catalog transaction."""
        await asyncio.to_thread(self._place_any, temp, entry.sha256, synced)
        fut: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._committing.append((entry, fut))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._record_batches(),
                                                  name="store catalog writes")
        return await fut

    def _place_any(self, temp: Path | bytes, sha256: str, synced: bool) -> None:
        if isinstance(temp, bytes):
            self._write_blob(temp, sha256, sync=True)
        else:
            self._place(temp, sha256, synced)

    async def _record_batches(self) -> None:
        while self._committing:
            batch, self._committing = self._committing, []
            try:
                await self._call(self._put_many, [entry for entry, _ in batch])
            except BaseException as e:  # the catalog failed, or shutdown cancelled us
                for _, fut in batch:
                    if not fut.done():
                        if isinstance(e, Exception):
                            fut.set_exception(e)
                        else:
                            fut.cancel()
                if not isinstance(e, Exception):
                    raise
                continue
            for entry, fut in batch:
                self._entries[entry.key] = entry
                if not fut.done():
                    fut.set_result(entry)

    async def shas_with_prefix(self, prefix: str) -> dict[str, str]:
        """key -> sha256 of every catalog entry whose key starts with `prefix`
        (one query, tuples straight into a dict: a sync compares thousands
        of them, and building an Entry each took twice as long)."""

        def run() -> dict[str, str]:
            hi = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            return dict(self.db.execute(
                "SELECT key, sha256 FROM entries WHERE key >= ? AND key < ?", (prefix, hi)))

        found: dict[str, str] = await self._call(run)
        return found

    async def commit_entries(self, entries: list[Entry], refresh: bool = False) -> None:
        """Record entries for blobs already in the store, in one transaction
        (`refresh`: touch each blob first, keeping a running collection off it)."""
        if refresh:
            def touch() -> None:
                for e in entries:
                    os.utime(self.blob_path(e.sha256))
            await asyncio.to_thread(touch)
        await self._call(self._put_many, entries)
        for e in entries:
            self._entries[e.key] = e

    def _put_many(self, entries: list[Entry]) -> None:
        rows = [(e.key, e.sha256, e.size, e.stored_at, e.checked_at, e.etag, e.last_modified)
                for e in entries]
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?)", rows)

    # -- entries ---------------------------------------------------------

    def lookup(self, key: str) -> Entry | None:
        e = self._entries.get(key)
        if e is not None:
            self._accessed[key] = time.time()
        return e

    def peek(self, key: str) -> Entry | None:
        """The entry for a key, from memory, without counting it as a use."""
        return self._entries.get(key)

    async def flush_access(self) -> int:
        """Write the last-access times collected since the last call to the
        catalog in one transaction (hits only touch a dict); how many."""
        if not self._accessed:
            return 0
        batch, self._accessed = self._accessed, {}

        def run() -> None:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany(
                    "INSERT INTO access VALUES (?,?) ON CONFLICT(key) DO UPDATE "
                    "SET at=max(at, excluded.at)", list(batch.items()))

        await self._call(run)
        return len(batch)

    def evict(self, key: str) -> None:
        """Forget the in-memory copy of an entry (the catalog is read again)."""
        self._entries.pop(key, None)

    async def mark_checked(self, key: str, when: float) -> None:
        e = self._entries.get(key)
        if e is None:
            return
        e.checked_at = when
        await self._call(lambda: self.db.execute(
            "UPDATE entries SET checked_at=? WHERE key=?", (when, key)))

    async def forget(self, key: str) -> None:
        self._entries.pop(key, None)
        await self._call(lambda: self.db.execute("DELETE FROM entries WHERE key=?", (key,)))

    def entry_count(self) -> int:
        return len(self._entries)

    # -- vouches ---------------------------------------------------------

    async def add_vouches(self, vouches: Iterable[Vouch]) -> int:
        """Record what an index vouches for; the number of rows written. The
        rows of a large index are compared with those already recorded under
        the keys' common prefix, and only new or changed ones are written: an
        index that changed a little costs one read and a few writes."""

        def run() -> int:
            rows = [(v.key, v.size, v.digest.algo, v.digest.hexdigest, v.canonical)
                    for v in vouches]
            # a prefix of the keys as strings (not paths): their range in the table
            keys = [r[0] for r in rows]
            under = os.path.commonprefix(keys) if len(rows) > 256 else ""  # noqa: RUF071
            if under:
                hi = under[:-1] + chr(ord(under[-1]) + 1)
                have = {r[0]: r for r in self.db.execute(
                    "SELECT key, size, algo, digest, canonical FROM vouches "
                    "WHERE key >= ? AND key < ?", (under, hi))}
                rows = [r for r in rows if have.get(r[0]) != r]
                if not rows:
                    return 0
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("INSERT OR REPLACE INTO vouches VALUES (?,?,?,?,?)", rows)
            return len(rows)
        n: int = await self._call(run)
        return n

    async def vouch_for(self, key: str) -> Vouch | None:
        v: Vouch | None = await self._call(self._vouch, key)
        return v

    def _vouch(self, key: str) -> Vouch | None:
        row = self.db.execute("SELECT size, algo, digest, canonical FROM vouches WHERE key=?",
                              (key,)).fetchone()
        return None if row is None else Vouch(key, row[0], Digest(row[1], row[2]), row[3])

    async def collect_garbage(self, grace: float = 3600.0,
                              on_dir: Callable[[], None] | None = None) -> tuple[int, int]:
        """Delete blobs that no cache entry and no snapshot references and that
        are older than `grace` seconds (so that a blob just written by a running
        server or sync, whose reference is about to be recorded, is kept).
        `on_dir` is called after each of the (up to 256) blob directories.
        Returns (files, bytes) removed."""

        def referenced(db: sqlite3.Connection) -> set[str]:
            refs = {r[0] for r in db.execute("SELECT sha256 FROM entries")}
            with contextlib.suppress(sqlite3.OperationalError):  # no snapshot table yet
                refs |= {r[0] for r in db.execute(
                    "SELECT DISTINCT sha256 FROM snapshot_files WHERE sha256 IS NOT NULL")}
            return refs

        refs = await self.run_db(referenced)
        limit = time.time() - grace

        def sweep() -> tuple[int, int]:
            files = size = 0
            for sub in self.blobs.iterdir():
                if not sub.is_dir() or sub.is_symlink():
                    continue
                for blob in sub.iterdir():
                    if blob.name in refs:
                        continue
                    try:
                        st = blob.lstat()
                        if st.st_mtime > limit:
                            continue
                        blob.unlink()
                    except FileNotFoundError:
                        continue
                    files += 1
                    size += st.st_size
                if on_dir is not None:
                    on_dir()
            for kind in self.derived.iterdir():
                if not kind.is_dir() or kind.is_symlink():
                    continue
                for kept in kind.iterdir():
                    if not self.blob_path(kept.name).exists():
                        kept.unlink(missing_ok=True)
            return files, size

        return await asyncio.to_thread(sweep)


def now() -> float:
    return time.time()
