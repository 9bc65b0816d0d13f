"""The cache: lookup, revalidation, one upstream download per file, and
verification before anything is kept.

For each cache key at most one `Flight` runs at a time. Every client that
asks for the key while it runs waits on the same flight and reads the bytes
from its temporary file as they arrive. The last byte is held back from
clients until the whole file is verified (size, hash vouched by an index or
by its own name, signature for signed metadata), so a client never sees a
bad file complete: on failure its connection is aborted instead. The flight
runs as its own task: a client that goes away cancels nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import hashlib
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pkgdepot import openpgp
from pkgdepot.config import Config
from pkgdepot.diff import keep_listing
from pkgdepot.diff import prepare as prepare_diff
from pkgdepot.errors import (
    Forbidden,
    FormatError,
    NotFound,
    PkgdepotError,
    StoreError,
    UpstreamError,
    UpstreamTimeout,
    VerificationError,
)
from pkgdepot.fetch import Fetcher, TooSlow, Upstream
from pkgdepot.formats import Kind, PathInfo, Role, Vouch
from pkgdepot.memory import release_free_memory
from pkgdepot.metrics import Stats
from pkgdepot.proxy.route import Route
from pkgdepot.snapshots import FileRef, Snapshots
from pkgdepot.store import Entry
from pkgdepot.store.fs import FsStore, check_free

log = logging.getLogger(__name__)
FAILED_RESUME_WINDOW = 3600.0
SLOW_COOL_DOWN = 300.0  # seconds an upstream that was too slow is tried after the others
SIGNED_ROLES = (Role.RELEASE_INLINE, Role.RELEASE, Role.REPOMD)
PARSED_ROLES = (Role.RELEASE_INLINE, Role.RELEASE, Role.INDEX, Role.REPOMD,
                Role.CHECKSUM_NAMED, Role.BY_HASH)


@dataclass(frozen=True, slots=True)
class StreamHead:
    """A new body is arriving; what clients may already be told about it."""

    size: int
    etag: str | None
    last_modified: str | None


#: bodies up to this size (by Content-Length) are received into memory, not a file
INLINE_BODY = 64 << 10
#: ... as long as the bodies of downloads not yet in the store stay under this
HELD_LIMIT = 32 << 20
#: seconds without a download before the memory freed by the last ones is
#: handed back to the system (glibc keeps it otherwise: a few MB per burst)
RELEASE_AFTER = 0.5


class _Unasked(enum.Enum):
    UNASKED = 0  # the catalog was not asked yet what vouches for a key


_UNASKED = _Unasked.UNASKED


class Flight:
    """One upstream fetch or revalidation of one key, shared by every waiter."""

    def __init__(self, key: str) -> None:
        loop = asyncio.get_running_loop()
        self.key = key
        self.head: asyncio.Future[Entry | StreamHead] = loop.create_future()
        self.done: asyncio.Future[Entry] = loop.create_future()
        # Waiters may never look at these futures: mark exceptions retrieved.
        self.head.add_done_callback(_retrieve)
        self.done.add_done_callback(_retrieve)
        self.temp: Path | None = None
        self.reader: BinaryIO | None = None
        #: a small body, received into memory instead of a temporary file
        self.body: bytearray | None = None
        self.held = 0  # its size, counted in Cache._held until the flight ends
        self.size: int | None = None
        self.written = 0
        self.revalidated = False
        self.verified = False   # the whole body checked: clients may have the last byte
        self.finished = False
        self._readers = 0
        self._progress = asyncio.Event()
        self._relay_progress = asyncio.Event()

    def acquire_reader(self) -> BinaryIO | None:
        """The open temporary file, for a client to stream from, or None when
        the body is kept in memory (`body`); call `release_reader` when done
        (the file closes after the last one)."""
        if self.reader is None and self.body is None:
            raise UpstreamError("the download ended before it could be read")
        self._readers += 1
        return self.reader

    def release_reader(self) -> None:
        self._readers -= 1
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.finished and self._readers <= 0 and self.reader is not None:
            self.reader.close()
            self.reader = None

    def notify(self) -> None:
        """Wake every waiter: first those that relay the progress to another
        process (`wait_progress(relay=True)`), then those that send bytes."""
        relay, self._relay_progress = self._relay_progress, asyncio.Event()
        ev, self._progress = self._progress, asyncio.Event()
        relay.set()
        ev.set()

    async def wait_progress(self, relay: bool = False) -> None:
        """Until the next `notify`. `relay`: this waiter tells a worker process
        how far it may send (8 bytes), which lets that process's core send
        its clients' share: it goes before this loop's own clients, whose
        sends take milliseconds each. (In the 16-client stampede, the last
        position reached the worker 2-31 ms after the download's end, median
        5 ms, behind the leader's own clients' sends; woken first, 0.2-0.5 ms.)"""
        await (self._relay_progress if relay else self._progress).wait()

    def sendable(self) -> int:
        """How many bytes clients may have now: all once verified, else all but
        the last one."""
        if self.verified or (self.done.done() and not self.done.cancelled()
                             and self.done.exception() is None):
            return self.written
        if self.size is None:
            return 0
        return min(self.written, self.size - 1)

    @property
    def failed(self) -> BaseException | None:
        if self.done.done() and not self.done.cancelled():
            return self.done.exception()
        return None


@contextlib.contextmanager
def _transfer_errors(url: str, flight: Flight) -> Iterator[None]:
    """A body transfer's failures as the cache reports them: a stall, a full
    data directory, or any other transport failure (what the depot raised
    itself passes unchanged)."""
    try:
        yield
    except TimeoutError as e:
        raise UpstreamTimeout(f"{url}: upstream stalled after {flight.written} bytes") from e
    except PkgdepotError:
        raise
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise StoreError(f"{url}: the data directory filled up after "
                             f"{flight.written} bytes: not kept") from e
        raise UpstreamError(f"{url}: transfer failed after {flight.written} bytes: "
                            f"{e}") from e
    except Exception as e:
        raise UpstreamError(f"{url}: transfer failed after {flight.written} bytes: "
                            f"{type(e).__name__}: {e}") from e


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


@dataclass(slots=True)
class Hit:
    entry: Entry
    state: str                 # HIT, MISS, REVALIDATED, STALE
    warning: str | None = None


@dataclass(slots=True)
class Streaming:
    flight: Flight
    head: StreamHead


def _upstream_base(route: Route, i: int) -> str:
    """What upstream health is recorded under: the repository's i-th base URL,
    or SCHEME://HOST[:PORT] of the /HOST/ form."""
    if route.repo is not None:
        return route.repo.upstreams[i]
    return f"{route.key.partition('/')[0]}://{route.origin}"


class Hasher:
    def __init__(self, extra: str | None) -> None:
        self.sha256 = hashlib.sha256()
        self.extra = hashlib.new(extra) if extra and extra != "sha256" else None

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.extra is not None:
            self.extra.update(data)

    def digest(self, algo: str) -> str:
        if algo == "sha256" or self.extra is None:
            return self.sha256.hexdigest()
        return self.extra.hexdigest()


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


class _FileWriter:
    """Writes a download's chunks to its temporary file, in order, in a thread
    that keeps going while chunks are waiting: the event loop hands them over
    and never waits between writes (a write that ends picks up everything
    that arrived meanwhile, in one go). Each write is announced to the loop
    (`wrote`) before it is hashed, so clients get the bytes at once."""

    def __init__(self, fd: int, hasher: Hasher, wrote: Callable[[int], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = fd
        self._hasher = hasher
        self._wrote = wrote
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._running = False
        self._stopped = False
        self._error: BaseException | None = None
        self._task: asyncio.Future[None] | None = None
        self._buf: mmap.mmap | None = None  # see _joined

    def put(self, chunk: bytes) -> None:
        """Queue `chunk`; raises what a failed write raised."""
        if self._error is not None:
            raise self._error
        with self._lock:
            self._pending.append(chunk)
            if self._running:
                return
            self._running = True
        self._task = self._loop.run_in_executor(None, self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending or self._stopped:
                    self._running = False
                    return
                chunks, self._pending = self._pending, []
            try:
                with self._joined(chunks) as data:
                    _write_all(self._fd, data)
                    self._loop.call_soon_threadsafe(self._wrote, len(data))  # before the next
                    self._hasher.update(data)
            except BaseException as e:
                with self._lock:
                    self._error = e
                    self._running = False
                    self._stopped = True
                return

    @contextlib.contextmanager
    def _joined(self, chunks: list[bytes]) -> Iterator[memoryview]:
        """The chunks as one buffer, to be written and hashed in one go. Joined
        in a mapping of this writer's own, reused from write to write and
        unmapped at the end: joining into new bytes each time would leave the
        allocator holding megabytes after a large download (11 MB here after
        one of 100 MB), and having those mapped and unmapped each time costs
        page faults on every write."""
        if len(chunks) == 1:
            with memoryview(chunks[0]) as one:
                yield one
            return
        size = sum(len(c) for c in chunks)
        if self._buf is None or len(self._buf) < size:
            grown = max(size, 2 * len(self._buf)) if self._buf is not None else size
            self._unmap()
            self._buf = mmap.mmap(-1, grown)
        with memoryview(self._buf) as whole:
            pos = 0
            for c in chunks:
                whole[pos:pos + len(c)] = c
                pos += len(c)
            with whole[:size] as data:
                yield data

    async def finish(self) -> None:
        """Wait until every chunk is written and hashed (raises what a write raised)."""
        if self._task is not None:  # the last drain (nothing is put meanwhile)
            # shielded: if this is cancelled, the thread's future still tells
            # `stop` when the thread is done with the file
            await asyncio.shield(self._task)
        self._unmap()
        if self._error is not None:
            raise self._error

    async def stop(self) -> None:
        """Drop what is not written yet and wait for the thread to leave the
        file (before it is closed); errors are the caller's to have seen."""
        with self._lock:
            self._stopped = True
            self._pending.clear()
        if self._task is not None:
            await self._task
        self._unmap()

    def _unmap(self) -> None:
        if self._buf is not None:
            self._buf.close()
            self._buf = None


class Cache:
    def __init__(self, config: Config, store: FsStore, fetcher: Fetcher,
                 keyrings: dict[str, Path] | None = None,
                 clock: Callable[[], float] = time.time,
                 snapshots: Snapshots | None = None,
                 mirrors: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.snapshots = snapshots
        self.mirrors = mirrors
        self.store = store
        self.fetcher = fetcher
        self.keyrings = keyrings or {}
        self.clock = clock
        self.flights: dict[str, Flight] = {}
        self.negative: dict[str, float] = {}
        #: keys whose last download failed verification after clients had most of
        #: it: their partial copies hold bad bytes, so resumptions get the whole file.
        self.failed_recently: dict[str, float] = {}
        #: upstream base -> until when it is tried last (it trickled below min_rate)
        self.slow_until: dict[str, float] = {}
        self.stats = Stats()
        self._tasks: set[asyncio.Task[None]] = set()
        #: verified downloads being moved into the store (see `_keep`, `drain`)
        self._commits: set[asyncio.Task[Entry]] = set()
        #: bytes of small bodies held in memory by downloads not yet finished
        self._held = 0
        self._release_timer: asyncio.TimerHandle | None = None

    # -- the entry point ---------------------------------------------------

    async def lookup(self, route: Route) -> Hit | Streaming:
        key = route.key
        entry = self.store.lookup(key)
        vouch: Vouch | _Unasked | None = _UNASKED
        if entry is None and route.kind is Kind.IMMUTABLE and key not in self.flights:
            # added by another process (import, sync)? If not, what vouches for it
            entry, vouch = await self.store.load_with_vouch(key)
        now = self.clock()
        if entry is not None and (route.kind is Kind.IMMUTABLE
                                  or now - entry.checked_at < self.config.revalidate_after):
            return Hit(entry, "HIT")
        until = self.negative.get(key)
        if until is not None:
            if until > now:
                raise NotFound(f"upstream has no {route.path} (remembered for "
                               f"{until - now:.0f} s more)")
            del self.negative[key]
        flight = self.flights.get(key)
        if flight is None:
            flight = self._start(route, entry, vouch)
        try:
            head = await asyncio.shield(flight.head)
        except (UpstreamError, Forbidden, StoreError) as e:
            if entry is not None and not isinstance(e, VerificationError | Forbidden):
                return Hit(entry, "STALE", f'110 pkgdepot "Response is stale: {e.message}"')
            raise
        if isinstance(head, Entry):
            if flight.revalidated:
                return Hit(head, "REVALIDATED")
            return Hit(head, "MISS")
        return Streaming(flight, head)

    def _start(self, route: Route, old: Entry | None, vouch: Vouch | _Unasked | None) -> Flight:
        flight = Flight(route.key)
        self.flights[route.key] = flight
        task = asyncio.create_task(self._run(flight, route, old, vouch),
                                   name=f"fetch {route.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return flight

    async def _run(self, flight: Flight, route: Route, old: Entry | None,
                   vouch: Vouch | _Unasked | None) -> None:
        try:
            entry = await self._fetch(flight, route, old, vouch)
        except BaseException as e:
            if isinstance(e, VerificationError):
                self.stats.verify_failures += 1
            if flight.head.done() and isinstance(e, PkgdepotError):
                self.failed_recently[route.key] = self.clock() + FAILED_RESUME_WINDOW
                if len(self.failed_recently) > 10000:
                    self.failed_recently.clear()
            if isinstance(e, PkgdepotError) and not isinstance(e, NotFound):
                self.stats.error(f"{route.key}: {e.message}", "verification"
                                 if isinstance(e, VerificationError) else "upstream")
            if not flight.head.done():
                flight.head.set_exception(e)
            if not flight.done.done():
                flight.done.set_exception(e)
            if not isinstance(e, Exception):
                raise
        else:
            if not flight.head.done():
                flight.head.set_result(entry)
            flight.done.set_result(entry)
        finally:
            self._held -= flight.held
            flight.held = 0
            if self.flights.get(route.key) is flight:
                del self.flights[route.key]
                if not self.flights:
                    self._release_memory_soon()
            flight.finished = True
            flight.notify()
            if flight.temp is not None:
                flight.temp.unlink(missing_ok=True)
            flight._maybe_close()

    def _release_memory_soon(self) -> None:
        """Nothing is in flight: if that is still so RELEASE_AFTER seconds
        from now, give the memory the downloads freed back to the system."""
        if self._release_timer is not None:
            self._release_timer.cancel()
        loop = asyncio.get_running_loop()

        def release() -> None:
            self._release_timer = None
            if not self.flights and not self._commits:
                loop.run_in_executor(None, release_free_memory)

        self._release_timer = loop.call_later(RELEASE_AFTER, release)

    def resume_is_safe(self, key: str) -> bool:
        """False when a client's partial copy of `key` may hold bytes of a download
        that then failed: a Range resumption must get the whole file instead."""
        until = self.failed_recently.get(key)
        return until is None or until < self.clock()

    # -- fetching ----------------------------------------------------------

    async def _expected(self, route: Route, vouch: Vouch | _Unasked | None) -> Vouch | None:
        """What the file must match: the index's vouch (`vouch`, or looked up
        if it is `_UNASKED`) and the hash in its own name."""
        if vouch is _UNASKED:
            vouch = await self.store.vouch_for(route.key)
        if route.info.digest is not None:  # the name says the hash; an index may say the size
            size = vouch.size if vouch is not None and vouch.digest == route.info.digest else None
            return Vouch(route.key, size, route.info.digest)
        return vouch

    def _keyring(self, route: Route) -> Path | None:
        if route.repo is None:
            return None
        return self.keyrings.get(route.repo.name)

    async def _fetch(self, flight: Flight, route: Route, old: Entry | None,
                     vouch: Vouch | _Unasked | None) -> Entry:
        expected = await self._expected(route, vouch)
        headers: dict[str, str] = {}
        if old is not None:
            if old.etag:
                headers["If-None-Match"] = old.etag
            if old.last_modified:
                headers["If-Modified-Since"] = old.last_modified
        keyring = self._keyring(route) if route.info.role in SIGNED_ROLES else None
        errors: list[PkgdepotError] = []
        for i, url in self._upstream_order(route):
            self.stats.upstream_requests += 1
            base = _upstream_base(route, i)
            started = time.monotonic()
            try:
                up = await self.fetcher.get(url, headers)
            except Forbidden:
                raise
            except UpstreamError as e:
                log.warning("upstream failed: %s", e.message)
                self.stats.upstream(base, time.monotonic() - started, e.message)
                errors.append(e)
                continue
            self.stats.upstream(base, time.monotonic() - started, None if up.status < 500
                                else f"{up.url} answered HTTP {up.status}")
            try:
                result = await self._take(flight, route, old, up, expected, keyring)
            except (UpstreamError, VerificationError, FormatError) as e:
                log.warning("%s: %s", route.key, e.message)
                if isinstance(e, TooSlow):
                    self._too_slow(base)
                if flight.head.done():
                    raise  # clients are already receiving this body: abort them
                errors.append(e)
                continue
            finally:
                up.release()
            if isinstance(result, PkgdepotError):
                errors.append(result)
                continue
            return result
        if errors and all(isinstance(e, NotFound) for e in errors):
            self.negative[route.key] = self.clock() + self.config.negative_ttl
            raise errors[0]
        if errors and all(isinstance(e, UpstreamTimeout) for e in errors):
            raise UpstreamTimeout("every upstream timed out: "
                                  + "; ".join(e.message for e in errors))
        if len(errors) == 1:
            raise errors[0]
        raise UpstreamError("every upstream failed: " + "; ".join(e.message for e in errors))

    def _upstream_order(self, route: Route) -> list[tuple[int, str]]:
        """The route's upstreams in order, those that were too slow lately last."""
        now = self.clock()
        order = list(enumerate(route.urls))
        if self.slow_until:
            order.sort(key=lambda iu: self.slow_until.get(_upstream_base(route, iu[0]), 0) > now)
        return order

    def _too_slow(self, base: str) -> None:
        """`base` trickled below upstream.min_rate: try the others first for a while."""
        if len(self.slow_until) > 1000:
            self.slow_until.clear()
        self.slow_until[base] = self.clock() + SLOW_COOL_DOWN

    async def _take(self, flight: Flight, route: Route, old: Entry | None, up: Upstream,
                    expected: Vouch | None, keyring: Path | None) -> Entry | PkgdepotError:
        """Handle one upstream answer: 304, error status, or a body to keep."""
        status = up.status
        if status == 304 and old is not None:
            await self.store.mark_checked(route.key, self.clock())
            flight.revalidated = True
            return old
        if status in (404, 410):
            return NotFound(f"upstream {up.url} answered {status}")
        if status != 200:
            return UpstreamError(f"upstream {up.url} answered HTTP {status}")
        length = up.response.content_length
        if (expected is not None and expected.size is not None and length is not None
                and length != expected.size):
            return VerificationError(
                f"{up.url}: upstream sends {length} bytes, the index says {expected.size}")
        etag = up.response.headers.get("ETag")
        last_modified = up.response.headers.get("Last-Modified")
        # A small body (that needs no signature check, which reads a file) is
        # received into memory and clients are sent it from there; it reaches
        # the disk when it is kept (one trip to a thread). A temporary file,
        # and the trips to a thread to create, write and read it, would cost
        # more than the bytes.
        temp: Path | None = None
        wfd = -1
        if flight.reader is not None:
            flight.reader.close()
            flight.reader = None
        flight.written = 0
        if (length is not None and length <= INLINE_BODY and keyring is None
                and self._held + length <= HELD_LIMIT):
            flight.body = bytearray()
            self._held += length - flight.held
            flight.held = length
        else:
            flight.body = None
            self._held -= flight.held
            flight.held = 0
            temp, flight.reader, wfd = await asyncio.to_thread(self._open_temp, length)
            flight.temp = temp
        if length is not None and keyring is None:
            flight.size = length
            flight.head.set_result(StreamHead(length, etag, last_modified))
        hasher = Hasher(expected.digest.algo if expected else None)
        try:
            if flight.body is not None:
                await self._receive_small(flight, up, flight.body, hasher)
            else:
                await self._receive(flight, up, wfd, hasher)
        finally:
            self.stats.fetched(route.origin, flight.written)
        if length is not None and flight.written != length:
            raise UpstreamError(f"{up.url}: connection closed after {flight.written} "
                                f"of {length} bytes")
        sha256 = hasher.sha256.hexdigest()
        if expected is not None:
            if expected.size is not None and flight.written != expected.size:
                raise VerificationError(f"{up.url}: got {flight.written} bytes, "
                                        f"the index says {expected.size}: not kept")
            got = hasher.digest(expected.digest.algo)
            if got != expected.digest.hexdigest:
                raise VerificationError(
                    f"{up.url}: {expected.digest.algo} is {got}, the index says "
                    f"{expected.digest.hexdigest}: not kept")
        if route.info.role not in PARSED_ROLES and keyring is None:
            # Verified, and nothing else depends on it: waiting clients get the
            # last byte now, while the file is made durable and recorded.
            # (Indices are released only once what they vouch for is recorded.)
            flight.verified = True
            flight.notify()
        entry = Entry(route.key, sha256, flight.written, self.clock(), self.clock(), etag,
                      last_modified)
        content: Path | bytes = temp if temp is not None else bytes(flight.body or b"")
        keep = asyncio.create_task(self._keep(route, old, up.url, content, entry, expected,
                                              keyring), name=f"keep {route.key}")
        flight.temp = None  # the keeping task owns it now
        self._commits.add(keep)
        keep.add_done_callback(self._commits.discard)
        keep.add_done_callback(_retrieve)
        return await asyncio.shield(keep)

    async def _keep(self, route: Route, old: Entry | None, url: str, temp: Path | bytes,
                    entry: Entry, expected: Vouch | None, keyring: Path | None) -> Entry:
        """A complete, verified body (a temporary file, or the bytes of a small
        one): check its signature, move it into the store and record it. Its
        own task, shielded from the download's: a shutdown waits for it
        (`drain`) instead of losing a file it already has."""
        plain: Path | None = None
        sig: tuple[str, FileRef] | None = None
        try:
            if keyring is not None:
                assert isinstance(temp, Path)  # signed files are never kept in memory
                plain, sig = await self._verify_signature(route, url, temp, keyring)
            changed = old is None or old.sha256 != entry.sha256
            entry = await self.store.commit(temp, entry)
            if changed:
                await self._record_vouches(route, entry, plain)
                await self._record_snapshot(route, entry, expected, sig)
        finally:
            if plain is not None:
                plain.unlink(missing_ok=True)
            if isinstance(temp, Path):
                temp.unlink(missing_ok=True)  # still there only if it was not kept
        return entry

    async def drain(self, grace: float, commits: float = 30.0) -> None:
        """For a shutdown: downloads in progress get `grace` seconds to finish,
        then are abandoned (nothing of them is kept); files already complete and
        verified are moved into the store and recorded (waited for up to
        `commits` seconds), so a restart serves them without a new download."""
        running = [t for t in self._tasks if not t.done()]
        if running:
            log.info("shutting down: waiting up to %g s for %d download(s)", grace,
                     len(running))
            _done, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("shutting down: %d unfinished download(s) abandoned",
                            len(pending))
                await asyncio.wait(pending, timeout=5)
        keeping = [t for t in self._commits if not t.done()]
        if keeping:
            await asyncio.wait(keeping, timeout=commits)

    def _open_temp(self, size: int | None) -> tuple[Path, BinaryIO, int]:
        """A new temporary file, opened for the writer and for readers (one
        thread hop instead of three). StoreError (503) before anything is sent
        to clients when the data directory has no room for `size` bytes."""
        check_free(self.store.tmp, size)
        temp = self.store.new_temp()
        return temp, open(temp, "rb"), os.open(temp, os.O_WRONLY | os.O_APPEND)

    async def _receive_small(self, flight: Flight, up: Upstream, body: bytearray,
                             hasher: Hasher) -> None:
        """Read a small body from upstream into memory (`INLINE_BODY`)."""
        rate = up.watch_rate()
        try:
            with _transfer_errors(up.url, flight):
                async for chunk in up.response.content.iter_any():
                    rate.got(len(chunk))
                    body += chunk
                    hasher.update(chunk)
                    flight.written = len(body)
                    flight.notify()
        finally:
            rate.stop()

    async def _receive(self, flight: Flight, up: Upstream, fd: int, hasher: Hasher) -> None:
        """Read the body from upstream and write it to the temporary file (in a
        thread, `_FileWriter`: reading never waits for the disk). Clients may
        have the bytes once written, before they are hashed."""

        def wrote(n: int) -> None:
            flight.written += n
            flight.notify()

        writer = _FileWriter(fd, hasher, wrote)
        closed = False
        rate = up.watch_rate()
        try:
            with _transfer_errors(up.url, flight), up.large_reads():
                async for chunk in up.response.content.iter_any():
                    rate.got(len(chunk))
                    writer.put(chunk)
                await writer.finish()
                closed = True
                os.close(fd)  # made durable when it moves into the store (after clients have it)
        finally:
            rate.stop()
            if not closed:
                await writer.stop()
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _verify_signature(self, route: Route, url: str, temp: Path, keyring: Path
                                ) -> tuple[Path | None, tuple[str, FileRef] | None]:
        """Check signed metadata against the repository's keyring. For InRelease,
        return the signed text (to parse instead of the raw file); for a detached
        signature, the signature's path and blob (kept with the file)."""
        if route.info.role is Role.RELEASE_INLINE:
            out = temp.with_name(temp.name + ".signed")
            await asyncio.to_thread(openpgp.verify_inline, keyring, temp, out)
            return out, None
        sig_path = route.backend.signature_of(route.path) if route.backend else None
        if sig_path is None:
            raise VerificationError(f"{route.path}: no detached signature is known for it")
        sig_url = url + sig_path[len(route.path):]
        sig = await self.fetcher.get(sig_url)
        try:
            if sig.status != 200:
                raise VerificationError(f"{sig_url}: signature not available "
                                        f"(HTTP {sig.status}); the repository has a keyring")
            body = await sig.body(1 << 20)
        finally:
            sig.release()
        sig_temp = await asyncio.to_thread(self.store.new_temp)
        try:
            await asyncio.to_thread(sig_temp.write_bytes, body)
            await asyncio.to_thread(openpgp.verify_detached, keyring, sig_temp, temp)
            sig_key = route.key.rsplit("/", 1)[0] + "/" + sig_path.rsplit("/", 1)[-1]
            now = self.clock()
            sha = hashlib.sha256(body).hexdigest()
            await self.store.commit(sig_temp, Entry(sig_key, sha, len(body), now, now))
        finally:
            sig_temp.unlink(missing_ok=True)
        return None, (sig_path, (sha, len(body)))

    async def _record_snapshot(self, route: Route, entry: Entry, expected: Vouch | None,
                               sig: tuple[str, FileRef] | None) -> None:
        """Cache-only named repositories: each change of volatile metadata that the
        cache sees is a snapshot. A new release file (InRelease, Release,
        repomd.xml) starts one; a file that the latest release vouches for only
        completes it; any other change starts one too."""
        if self.snapshots is None or route.repo is None or route.repo.name in self.mirrors:
            return
        repo, ref = route.repo.name, (entry.sha256, entry.size)
        role = route.info.role
        if role is Role.BY_HASH:
            alias = await self.store.vouch_for(route.key)
            if alias is None or alias.canonical is None:
                return
            await self.snapshots.complete_latest(repo, alias.canonical.split("/", 2)[2], ref)
            return
        if route.kind is not Kind.VOLATILE:
            return
        if route.backend is not None and route.backend.is_package_index(route.path):
            # its package list, for snapshot diffs, off the clients' path
            task = asyncio.create_task(prepare_diff(self.store, {route.path: ref}))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if role in SIGNED_ROLES:
            changes = {route.path: ref}
            if sig is not None:
                changes[sig[0]] = sig[1]
            snap = await self.snapshots.record(repo, changes, "cache")
            if snap is not None:
                log.info("snapshot %s/%s: new %s", repo, snap.stamp, route.path)
        elif expected is not None or role in (Role.RELEASE_SIG, Role.REPOMD_SIG):
            await self.snapshots.complete_latest(repo, route.path, ref)
        else:
            await self.snapshots.record(repo, {route.path: ref}, "cache")

    async def _record_vouches(self, route: Route, entry: Entry, plain: Path | None) -> None:
        backend = route.backend
        if backend is None or route.info.role not in PARSED_ROLES:
            return
        key, info = route.key, route.info
        if info.role is Role.BY_HASH:
            alias = await self.store.vouch_for(key)
            canonical = alias.canonical if alias is not None else None
            if canonical is None:
                return
            canon_info = backend.classify(canonical.split("/", 2)[-1]) or info
            key, info = canonical, canon_info
            if info.role not in PARSED_ROLES or info.role is Role.BY_HASH:
                return
        content = plain or self.store.blob_path(entry.sha256)
        parse_key, parse_info = key, info

        def parse() -> list[Vouch]:
            vouches, packages = backend.scan(parse_key, parse_info, content)
            if packages is not None:  # its package list too, for snapshot diffs
                keep_listing(self.store, entry.sha256, packages)
            return vouches

        try:
            vouches = await asyncio.to_thread(parse)
        except (FormatError, OSError, ValueError, EOFError) as e:
            log.warning("%s: cannot read the index (%s); files it lists stay unverified",
                        key, e)
            self.stats.error(f"{key}: unreadable index: {e}", "index")
            return
        n = await self.store.add_vouches(vouches)
        log.debug("%s vouches for %d files", key, n)
        # A cached file that the new index contradicts is dropped, so that the
        # next request fetches the version the index vouches for (instead of
        # serving a Packages file older than its InRelease: "Hash Sum mismatch").
        stale = [v.key for v in vouches if v.digest.algo == "sha256"
                 and (ent := self.store.peek(v.key)) is not None
                 and ent.sha256 != v.digest.hexdigest]
        for k in stale:
            await self.store.forget(k)
        if stale:
            log.info("%s: %d cached files no longer match it and were dropped", key, len(stale))


__all__ = ["Cache", "Flight", "Hit", "PathInfo", "StreamHead", "Streaming"]
