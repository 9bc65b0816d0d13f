"""The HTTP server: requests in, blobs and streams out.

Built on aiohttp's low-level server (its llhttp parser, keep-alive and
pipelining); responses for stored blobs go out with sendfile, small ones in
a single write from a memory cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from pkgdepot import __version__, libc, openpgp
from pkgdepot.cache import Cache, Hit, Streaming
from pkgdepot.config import Config
from pkgdepot.errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PkgdepotError,
    UpstreamError,
)
from pkgdepot.fetch import Fetcher
from pkgdepot.formats import Kind
from pkgdepot.logs import AccessLog, quiet_client_disconnects, use_log_format
from pkgdepot.metrics import NO_ORIGIN, Counters
from pkgdepot.ops.evict import Evictor
from pkgdepot.ops.housekeeping import Housekeeping
from pkgdepot.proxy import admin, status, tunnel
from pkgdepot.proxy.http import (
    content_type,
    etag_matches,
    http_date,
    parse_http_date,
    parse_range,
)
from pkgdepot.proxy.route import OwnPage, Route, Router, SnapshotRoute
from pkgdepot.snapshots import Snapshot, Snapshots
from pkgdepot.store import Entry
from pkgdepot.store.fs import FsStore

log = logging.getLogger(__name__)
SERVER = f"pkgdepot/{__version__}"
TARGET_HEADER = "X-Pkgdepot-Target"
#: internal: a worker asks for (and the leader answers with) a download in
#: progress as its file and positions rather than its bytes (see `_forward`)
FOLLOW_HEADER = "X-Pkgdepot-Follow"
FOLLOWS = "pkgdepot.follows"  # the request key set for an internal request that asked so
FORWARDED = {"range", "if-range", "if-none-match", "if-modified-since", "accept", "user-agent"}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date",
              "server"}
WARM_READ = 1 << 20            # blobs up to this size are read once when opened (page cache)
STREAM_STEP = 1 << 20         # clients of a download in progress are sent at least this much
PR_SET_PDEATHSIG = 1           # prctl(2): the signal this process gets when its parent dies
WORKER_START = 20.0            # seconds the leader waits for its workers to listen
SHUTDOWN_GRACE = 5.0          # seconds downloads in progress get to finish on SIGTERM
OPEN_BLOBS = 8192              # blobs kept open for sendfile (see _raise_nofile)


class OpenBlobs:
    """An LRU of open blob descriptors shared by concurrent responses
    (sendfile takes explicit offsets, so one descriptor serves many clients).
    A descriptor is closed only once the last response using it is done."""

    def __init__(self, limit: int = OPEN_BLOBS) -> None:
        self._files: OrderedDict[str, list[int]] = OrderedDict()  # sha -> [fd, users]
        self._limit = limit

    def get(self, sha: str) -> int | None:
        item = self._files.get(sha)
        if item is None:
            return None
        self._files.move_to_end(sha)
        item[1] += 1
        return item[0]

    def put(self, sha: str, fd: int) -> int:
        item = self._files.get(sha)
        if item is not None:  # another response opened it meanwhile
            os.close(fd)
            item[1] += 1
            return item[0]
        self._files[sha] = [fd, 1]
        self._evict()
        return fd

    def release(self, sha: str) -> None:
        item = self._files.get(sha)
        if item is not None:
            item[1] -= 1
            if item[1] <= 0 and len(self._files) > self._limit:
                self._evict()

    def _evict(self) -> None:
        """Close the least recently used descriptors that no response is using
        until the limit holds. Busy ones are skipped, not waited for: a client
        that reads one byte a second must not stop the cache from shrinking
        (that let it grow without bound, a descriptor per blob ever served)."""
        if len(self._files) <= self._limit:
            return
        for sha in list(self._files):
            item = self._files[sha]
            if item[1] <= 0:
                del self._files[sha]
                os.close(item[0])
                if len(self._files) <= self._limit:
                    return

    def __len__(self) -> int:
        return len(self._files)

    def in_use(self, sha: str) -> bool:
        item = self._files.get(sha)
        return item is not None and item[1] > 0

    def discard(self, sha: str) -> None:
        """Close a blob that was deleted (its disk space is freed once closed)."""
        item = self._files.get(sha)
        if item is not None and item[1] <= 0:
            del self._files[sha]
            os.close(item[0])


class _HeadersHeld(web.StreamResponse):
    """A streamed response whose headers aiohttp holds back instead of
    writing them at once, so that they can leave together with the body."""

    _send_headers_immediately = False


def _send_direct(transport: asyncio.Transport, head: bytes, blob: int, offset: int,
                 count: int) -> int:
    """Send `head` and then as much of `count` file bytes from `offset` as the
    socket takes now, without blocking. Returns the file bytes sent, or minus
    the number of head bytes still unsent (then no file bytes went). A
    connection that failed raises ConnectionResetError."""
    tsock = transport.get_extra_info("socket")
    fd = tsock.fileno()
    # asyncio hands out a socket wrapper without send(); a socket object on
    # the same descriptor (detached again, never closed) sends with MSG_MORE
    sock = socket.socket(tsock.family, tsock.type, tsock.proto, fileno=fd)
    try:
        if head:
            try:
                n = sock.send(head, socket.MSG_MORE if count else 0)
            except BlockingIOError:
                return -len(head)
            if n < len(head):
                return n - len(head)
        if not count:
            return 0
        try:
            return os.sendfile(fd, blob, offset, count)
        except BlockingIOError:
            return 0
    except OSError as e:
        raise ConnectionResetError(f"client went away: {e}") from e
    finally:
        sock.detach()


def _abort(request: web.BaseRequest) -> None:
    """Reset the client's connection (RST), so it cannot mistake a partial or
    bad body for a complete one."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def error_response(e: PkgdepotError) -> web.Response:
    """The text answer for an error: status, message and the hint to fix it."""
    headers = {"Cache-Control": "no-store", "X-Pkgdepot-Error": type(e).__name__,
               "Server": SERVER}
    if isinstance(e, MethodNotAllowed):
        headers["Allow"] = "GET, HEAD"
    body = f"{e.status} {e.message}\n" + (f"hint: {e.hint}\n" if e.hint else "")
    return web.Response(status=e.status, text=body, headers=headers)


class Depot:
    """Everything one server process needs, started and stopped together."""

    def __init__(self, config: Config, leader: str | None = None) -> None:
        """`leader`: for a worker process, the leader's internal socket address
        (misses and everything that is not a plain hit are handed to it)."""
        self.config = config
        self.leader = leader
        self._leader_session: Any = None
        self.store = FsStore(config.data_dir)
        self.fetcher = Fetcher(config)
        self.router = Router(config)
        self.open_blobs = OpenBlobs(OPEN_BLOBS)
        self.started = time.time()
        self.cache: Cache | None = None
        self.snapshots = Snapshots(self.store)
        self._allowed_clients: set[str] = set()
        self.housekeeping: Housekeeping | None = None
        self.counters = Counters()
        self.store_usage = status.StoreUsage(self.store)
        #: the workers' control sockets (leader only), asked for their counts
        self.worker_controls: list[str] = []
        self.access = AccessLog(config.access_log, config.log_format) if config.access_log \
            else None
        self._minute_timer: asyncio.TimerHandle | None = None

    def _mark_minute(self) -> None:
        """Once a minute: the totals at its start, for the status page's chart."""
        now = time.time()
        fetched = self.cache.stats.bytes_from_upstream if self.cache is not None else 0
        self.counters.mark_minute(now, fetched)
        self._minute_timer = asyncio.get_running_loop().call_later(
            60.0 - now % 60.0 + 0.05, self._mark_minute)

    def _start_housekeeping(self) -> None:
        """Access times are written in batches; the leader enforces cache.max_size."""
        evictor = None
        if self.leader is None and self.config.max_size > 0:
            mirrors = frozenset(r.name for r in self.config.repos.values() if r.mirror)
            evictor = Evictor(self.store, self.config.max_size, mirrors, recent=5.0,
                              busy=lambda key, sha: (self.cache is not None and key in
                                                     self.cache.flights)
                              or self.open_blobs.in_use(sha),
                              on_removed=self.open_blobs.discard)
        self.housekeeping = Housekeeping(self.store, evictor)
        self.housekeeping.start()

    async def start(self) -> None:
        self._mark_minute()
        if self.leader is not None:  # a worker: reads only, never cleans up or fetches
            import aiohttp

            await asyncio.to_thread(self.store.open, False)
            self.snapshots = await Snapshots(self.store).open()
            self._leader_session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.leader, limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                auto_decompress=False)
            self._start_housekeeping()
            return
        await asyncio.to_thread(self.store.open)
        keyrings: dict[str, Path] = {}
        for repo in self.config.repos.values():
            if repo.keyring is not None:
                keyrings[repo.name] = await asyncio.to_thread(
                    openpgp.binary_keyring, repo.keyring, self.config.data_dir / "keyrings")
        await self.fetcher.start()
        self.snapshots = await Snapshots(self.store).open()
        mirrors = frozenset(r.name for r in self.config.repos.values() if r.mirror)
        self.cache = Cache(self.config, self.store, self.fetcher, keyrings,
                           snapshots=self.snapshots, mirrors=mirrors)
        self._start_housekeeping()

    async def close(self) -> None:
        if self.housekeeping is not None:
            await self.housekeeping.stop()
        if self._minute_timer is not None:
            self._minute_timer.cancel()
        if self.access is not None:
            self.access.close()
        if self._leader_session is not None:
            await self._leader_session.close()
            await self.store.close()
            return
        if self.cache is not None:
            await self.cache.drain(0)
        await self.fetcher.close()
        await self.store.close()

    # -- request handling --------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        access = self.access
        if access is None:
            return await self._handle(request, request.raw_path, check_client=True)
        started = time.time()
        resp: web.StreamResponse | None = None
        try:
            resp = await self._handle(request, request.raw_path, check_client=True)
            return resp
        finally:
            access.response(request, resp, started)

    async def handle_internal(self, request: web.BaseRequest) -> web.StreamResponse:
        """Requests a worker hands over (on the leader's private socket): the
        worker already checked the client; the target travels in a header."""
        if request.headers.get(FOLLOW_HEADER) == "1":
            request[FOLLOWS] = True
        return await self._handle(request, request.headers.get(TARGET_HEADER, "/"),
                                  check_client=False)

    async def _handle(self, request: web.BaseRequest, target: str,
                      check_client: bool) -> web.StreamResponse:
        route: Route | SnapshotRoute | OwnPage | None = None
        try:
            if check_client:
                self.check_client(request)
            if request.method == "CONNECT":
                return await tunnel.handle_connect(request, self.config, self.fetcher.policy)
            if request.method not in ("GET", "HEAD"):
                if admin.is_admin_target(target):
                    raise Forbidden("state changes (sync, tag, untag, prune, gc) are not "
                                    "served on the client port",
                                    hint="use the admin API on server.admin_listen, with "
                                         "the token of server.admin_token_file")
                raise MethodNotAllowed(f"method {request.method} is not allowed: the depot "
                                       "is read-only for clients (GET and HEAD)")
            route = self.router.route(target)
            if self.leader is not None:
                return await self._worker_serve(request, target, route)
            if isinstance(route, OwnPage):
                return await status.own_page(self, route.path)
            if isinstance(route, SnapshotRoute):
                return await self._serve_snapshot(request, route)
            if route.repo is not None and route.repo.mirror is not None:
                return await self._serve_mirror(request, route, None)
            assert self.cache is not None
            result = await self.cache.lookup(route)
            if isinstance(result, Hit):
                try:
                    return await self._serve_entry(request, route, result)
                except FileNotFoundError:
                    # evicted or repaired by `pkgdepot gc`/`verify` meanwhile: fetch again
                    self.store.evict(route.key)
                    result = await self.cache.lookup(route)
                    if isinstance(result, Hit):
                        return await self._serve_entry(request, route, result)
            return await self._serve_stream(request, route, result)
        except PkgdepotError as e:
            if not isinstance(e, BadRequest | Forbidden | MethodNotAllowed) and e.status >= 500:
                log.warning("%s %s -> %d %s", request.method, request.raw_path,
                            e.status, e.message)
            if isinstance(route, Route):
                self.counters.error(route.origin)
            elif isinstance(route, SnapshotRoute):
                self.counters.error(route.repo.name)
            elif route is None:
                self.counters.error(NO_ORIGIN)
            return self._error(e)

    # -- worker processes ------------------------------------------------------

    async def _worker_serve(self, request: web.BaseRequest, target: str,
                            route: Route | SnapshotRoute | OwnPage) -> web.StreamResponse:
        """A worker serves what it can read from the store (hits, mirrors,
        snapshot metadata) and hands the rest to the leader."""
        if isinstance(route, SnapshotRoute):
            inner = route.inner
            if route.when is not None and inner is not None and (
                    route.repo.mirror is not None or inner.kind is not Kind.IMMUTABLE):
                return await self._serve_snapshot(request, route)
        elif isinstance(route, Route):
            if route.repo is not None and route.repo.mirror is not None:
                return await self._serve_mirror(request, route, None)
            entry = await self._fresh_entry(route)
            if entry is not None:
                try:
                    return await self._serve_entry(request, route, Hit(entry, "HIT"))
                except FileNotFoundError:
                    self.store.evict(route.key)  # evicted meanwhile: the leader fetches it
        return await self._forward(request, target)

    async def _fresh_entry(self, route: Route) -> Entry | None:
        entry = await self.store.load(route.key)
        if entry is None:
            return None
        if route.kind is Kind.IMMUTABLE:
            return entry
        if time.time() - entry.checked_at < self.config.revalidate_after:
            return entry
        # the leader may have revalidated it since: ask the catalog, not memory
        self.store.evict(route.key)
        entry = await self.store.load(route.key)
        if entry is not None and time.time() - entry.checked_at < self.config.revalidate_after:
            return entry
        return None

    async def _forward(self, request: web.BaseRequest, target: str,
                       follow: bool = True) -> web.StreamResponse:
        """Hand a request to the leader and relay its answer. A download in
        progress is not relayed: the leader says where its file is and how
        far it may be read (FOLLOW_HEADER), and this process sends the bytes
        from the file itself."""
        import aiohttp

        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
        headers[TARGET_HEADER] = target
        if follow and request.method == "GET":
            headers[FOLLOW_HEADER] = "1"
        try:
            up = await self._leader_session.request(request.method, "http://leader/",
                                                    headers=headers, allow_redirects=False)
        except (aiohttp.ClientError, OSError) as e:
            return self._error(PkgdepotError(f"the depot's main process is not answering: {e}"))
        try:
            spec = up.headers.get(FOLLOW_HEADER)
            if spec is not None:
                followed = await self._follow(request, up, spec)
                if followed is not None:
                    return followed
                up.close()  # complete and kept before its file could be opened here
                return await self._forward(request, target, follow=False)
            resp = web.StreamResponse(status=up.status, reason=up.reason,
                                      headers=_relayed(up.headers))
            if up.content_length is not None:
                resp.content_length = up.content_length
            await resp.prepare(request)
            try:
                async for chunk in up.content.iter_chunked(1 << 18):
                    await resp.write(chunk)
            except (aiohttp.ClientError, OSError):
                _abort(request)  # the leader aborted (bad download): so do we
                return resp
            await resp.write_eof()
            return resp
        finally:
            up.release()

    async def _follow(self, request: web.BaseRequest, up: Any,
                      spec: str) -> web.StreamResponse | None:
        """Send the client a download in progress from the leader's temporary
        file (`spec`: see `_follow_spec`), as far as the leader's stream of
        positions allows. None if the download was complete and kept before
        this process could open its file (asked again, it is a hit)."""
        path, dev, ino, size_text = spec.split(" ")
        size = int(size_text)
        fd = _open_followed(path, int(dev), int(ino))
        if fd is None:  # the leader closed it: the download ended, but how?
            last = 0
            async for avail in _positions(up):
                last = avail
            if last == size:
                return None
            return self._error(UpstreamError(f"the download of {request.path} failed"))
        try:
            resp = _HeadersHeld(status=200, headers=_relayed(up.headers))
            resp.content_length = size
            writer: AbstractStreamWriter | None = None
            pos = 0
            async for avail in _positions(up):
                if writer is None:
                    writer = await resp.prepare(request)
                    if writer is None:
                        raise ConnectionResetError("client went away")
                if avail > pos:
                    await self._send_file(request, writer, fd, pos, avail - pos)
                    pos = avail
            if pos == size:
                await resp.write_eof()
            elif writer is None:
                return self._error(UpstreamError(f"the download of {request.path} failed"))
            else:
                _abort(request)  # the leader aborted (a bad or failed download): so do we
            return resp
        finally:
            os.close(fd)

    def check_client(self, request: web.BaseRequest) -> None:
        remote = request.remote
        if not remote or not self.config.allow_clients or remote in self._allowed_clients:
            return
        self._check_address(remote)
        if len(self._allowed_clients) > 4096:
            self._allowed_clients.clear()
        self._allowed_clients.add(remote)

    def _check_address(self, remote: str) -> None:
        try:
            ip = ipaddress.ip_address(remote.split("%", 1)[0])
        except ValueError:
            return  # a UNIX socket
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not any(ip in n for n in self.config.allow_clients):
            raise Forbidden(f"clients from {ip} may not use this depot",
                            hint="add the network to server.allow_clients")

    def _error(self, e: PkgdepotError) -> web.Response:
        return error_response(e)

    # -- snapshots -----------------------------------------------------------

    async def _serve_snapshot(self, request: web.BaseRequest,
                              sroute: SnapshotRoute) -> web.StreamResponse:
        repo = sroute.repo.name
        if sroute.when is None:
            return await self._snapshot_index(request, repo, sroute.index_name)
        snap = await self.snapshots.resolve(repo, sroute.when)
        route = sroute.inner
        assert route is not None
        if sroute.repo.mirror is not None:
            return await self._serve_mirror(request, route, snap)
        if route.kind is Kind.IMMUTABLE:
            # packages and by-hash files are shared by every state: the pool
            # (a worker hands these to the leader: only it has the cache)
            assert self.cache is not None
            result = await self.cache.lookup(route)
            if isinstance(result, Hit):
                resp = await self._serve_entry(request, route, result)
            else:
                resp = await self._serve_stream(request, route, result)
            return resp
        ref = await self.snapshots.file(repo, snap.id, route.path)
        if ref is None:
            raise NotFound(f"/{route.path} is not part of snapshot {repo}/{snap.stamp}")
        entry = Entry(route.key, ref[0], ref[1], snap.created, snap.created)
        hit = Hit(entry, "SNAPSHOT")
        resp = await self._serve_entry(request, route, hit, {"X-Pkgdepot-Snapshot": snap.stamp,
                                                             "Cache-Control": "max-age=86400"})
        return resp

    async def _serve_mirror(self, request: web.BaseRequest, route: Route,
                            snap: Snapshot | None) -> web.StreamResponse:
        """A mirror serves only what a complete sync published: metadata from the
        snapshot (the latest unless one is named), packages from the pool. It
        never goes upstream on a client's behalf."""
        assert route.repo is not None
        repo = route.repo.name
        if snap is None:
            snap = await self.snapshots.latest(repo)
            if snap is None:
                raise NotFound(f"mirror {repo!r} has not been synced yet",
                               hint=f"run: pkgdepot mirror sync {repo}")
        ref = await self.snapshots.file(repo, snap.id, route.path)
        if ref is not None:
            entry = Entry(route.key, ref[0], ref[1], snap.created, snap.created)
            return await self._serve_entry(request, route, Hit(entry, "MIRROR"),
                                           {"X-Pkgdepot-Snapshot": snap.stamp})
        if route.kind is Kind.IMMUTABLE:
            entry2 = await self.store.load(route.key)
            if entry2 is not None:
                return await self._serve_entry(request, route, Hit(entry2, "MIRROR"))
        raise NotFound(f"/{route.path} is not in mirror {repo!r} (state {snap.stamp})")

    async def _snapshot_index(self, request: web.BaseRequest, repo: str,
                              name: str) -> web.Response:
        snaps = await self.snapshots.history(repo)
        accept = request.headers.get("Accept", "")
        if name == "index.json" or (name == "" and "application/json" in accept):
            body = json.dumps({"repository": repo,
                               "snapshots": [s.as_dict() for s in snaps]}, indent=1)
            return web.Response(text=body + "\n", content_type="application/json",
                                headers={"Server": SERVER, "Cache-Control": "no-cache"})
        lines = "".join(" ".join([s.stamp, *s.tags]) + "\n" for s in snaps)
        return web.Response(text=lines, content_type="text/plain",
                            headers={"Server": SERVER, "Cache-Control": "no-cache"})

    # -- serving -------------------------------------------------------------

    def _headers(self, route: Route, etag: str | None, last_modified: str | None,
                 state: str) -> dict[str, str]:
        h = {"Content-Type": content_type(route.path), "Accept-Ranges": "bytes",
             "X-Pkgdepot-Cache": state, "Server": SERVER}
        if etag:
            h["ETag"] = etag
        if last_modified:
            h["Last-Modified"] = last_modified
        if route.kind is Kind.VOLATILE:
            h["Cache-Control"] = "max-age=0, must-revalidate"
        return h

    @staticmethod
    def _etag(entry: Entry) -> str:
        return f'"{entry.sha256[:40]}"'

    def _not_modified(self, request: web.BaseRequest, etag: str, last_modified: str) -> bool:
        inm = request.headers.get("If-None-Match")
        if inm is not None:
            return etag_matches(inm, etag)
        ims_header = request.headers.get("If-Modified-Since")
        if ims_header is None:
            return False
        ims = parse_http_date(ims_header)
        lm = parse_http_date(last_modified)
        return ims is not None and lm is not None and lm <= ims

    def _ranges(self, request: web.BaseRequest, route: Route, size: int, etag: str,
                last_modified: str) -> list[tuple[int, int]] | None:
        header = request.headers.get("Range")
        if header is None:
            return None
        if_range = request.headers.get("If-Range")
        if if_range is not None and if_range != etag and if_range != last_modified:
            return None
        if if_range is not None and self.cache is not None and not self.cache.resume_is_safe(
                route.key):
            return None  # resuming a download that failed verification: send it all
        return parse_range(header, size)

    async def _serve_entry(self, request: web.BaseRequest, route: Route, hit: Hit,
                           extra: dict[str, str] | None = None) -> web.StreamResponse:
        entry = hit.entry
        etag = self._etag(entry)
        last_modified = entry.last_modified or http_date(entry.stored_at)
        headers = self._headers(route, etag, last_modified, hit.state)
        if extra:
            headers.update(extra)
        if hit.warning:
            headers["Warning"] = hit.warning
        if self._not_modified(request, etag, last_modified):
            self.counters.served(route.origin, hit.state, 0)
            return web.Response(status=304, headers=headers)
        ranges = self._ranges(request, route, entry.size, etag, last_modified)
        head_only = request.method == "HEAD"
        self.counters.served(route.origin, hit.state, 0 if head_only else entry.size
                             if ranges is None else sum(b - a + 1 for a, b in ranges))
        fd = self.open_blobs.get(entry.sha256)
        if fd is None:
            fd = self.open_blobs.put(entry.sha256, await asyncio.to_thread(
                self._open_warm, entry.sha256, entry.size))
        try:
            if ranges is None and not head_only:
                return await self._send_whole(request, fd, entry.size, headers)
            # loop.sendfile wants a file object: one on the shared descriptor
            with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
                return await self._send_ranges(request, f, entry.size, ranges, headers,
                                               head_only)
        finally:
            self.open_blobs.release(entry.sha256)

    def _open_warm(self, sha: str, size: int) -> int:
        """Open a blob (in a thread) and, if it is of a size sent in one go,
        read it once so that the sends from the event loop find it in the
        page cache rather than wait for the disk."""
        fd = self.store.open_blob_fd(sha)
        if size <= WARM_READ:
            os.pread(fd, size, 0)
        return fd

    async def _send_whole(self, request: web.BaseRequest, fd: int, size: int,
                          headers: dict[str, str]) -> web.StreamResponse:
        """A whole blob: the headers and the body leave together (see
        `_send_file`)."""
        resp = _HeadersHeld(status=200, headers=headers)
        resp.content_length = size
        writer = await resp.prepare(request)
        if writer is None:
            raise ConnectionResetError("client went away")
        await self._send_file(request, writer, fd, 0, size)
        await resp.write_eof()
        return resp

    async def _send_file(self, request: web.BaseRequest, writer: AbstractStreamWriter,
                         fd: int, offset: int, count: int) -> None:
        """Send `count` bytes of file `fd` from `offset`, after the headers if
        the response still holds them back (`_HeadersHeld`). When the
        connection has nothing queued, which is the common case, that is one
        send of the headers (MSG_MORE, so they leave with the body) and one
        sendfile call straight from the event loop: no copies in Python, no
        extra loop round trips. Whatever the socket did not take goes the
        usual way, by loop.sendfile."""
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        held: bytes | None = getattr(writer, "_headers_buf", None)
        if getattr(writer, "_headers_written", True):
            held = None
        sent = 0
        if transport.get_write_buffer_size() == 0:
            if held:
                writer._headers_buf = None  # type: ignore[attr-defined]
                writer._headers_written = True  # type: ignore[attr-defined]
            sent = _send_direct(transport, held or b"", fd, offset, count)
            if sent < 0:  # the headers did not all go: queue the rest
                assert held is not None
                transport.write(held[len(held) + sent:])
                sent = 0
        elif held:
            writer.send_headers()
        if sent < count:
            with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
                await self._sendfile(request, asyncio.get_running_loop(), f, offset + sent,
                                     count - sent)

    async def _send_ranges(self, request: web.BaseRequest, f: BinaryIO, size: int,
                           ranges: list[tuple[int, int]] | None, headers: dict[str, str],
                           head_only: bool) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        if ranges is None or len(ranges) == 1:
            first, last = ranges[0] if ranges else (0, size - 1)
            resp = web.StreamResponse(status=206 if ranges else 200, headers=headers)
            if ranges:
                resp.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            resp.content_length = last - first + 1 if size else 0
            await resp.prepare(request)
            if not head_only and size:
                await self._sendfile(request, loop, f, first, last - first + 1)
            await resp.write_eof()
            return resp
        boundary = uuid.uuid4().hex
        ctype = headers["Content-Type"]
        parts = [((f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\n"
                   f"Content-Range: bytes {a}-{b}/{size}\r\n\r\n").encode(), a, b)
                 for a, b in ranges]
        closing = f"\r\n--{boundary}--\r\n".encode()
        total = sum(len(p) + b - a + 1 for p, a, b in parts) + len(closing)
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        resp = web.StreamResponse(status=206, headers=headers)
        resp.content_length = total
        await resp.prepare(request)
        if not head_only:
            for preamble, a, b in parts:
                await resp.write(preamble)
                await self._sendfile(request, loop, f, a, b - a + 1)
            await resp.write(closing)
        await resp.write_eof()
        return resp

    @staticmethod
    async def _sendfile(request: web.BaseRequest, loop: asyncio.AbstractEventLoop,
                        f: BinaryIO, offset: int, count: int) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        try:
            await loop.sendfile(transport, f, offset, count)
        except ConnectionError as e:
            raise ConnectionResetError("client went away") from e

    async def _serve_stream(self, request: web.BaseRequest, route: Route,
                            st: Streaming) -> web.StreamResponse:
        flight, head = st.flight, st.head
        etag = head.etag
        headers = self._headers(route, None, head.last_modified, "MISS")
        size = head.size
        ranges = self._ranges(request, route, size, etag or "", head.last_modified or "")
        if ranges is not None and len(ranges) > 1:
            entry = await asyncio.shield(flight.done)  # multi-range: wait for the whole file
            return await self._serve_entry(request, route, Hit(entry, "MISS"))
        first, last = ranges[0] if ranges else (0, size - 1)
        reader = flight.acquire_reader()
        try:
            follow = None
            if (reader is not None and ranges is None and size and request.method == "GET"
                    and request.get(FOLLOWS)):
                follow = _follow_spec(reader, size)
            resp: web.StreamResponse
            if follow is not None:  # a worker's client: the worker sends the bytes itself
                resp = web.StreamResponse(status=200, headers={**headers, FOLLOW_HEADER: follow})
            else:
                resp = _HeadersHeld(status=206 if ranges else 200, headers=headers)
                if ranges:
                    resp.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
                resp.content_length = last - first + 1 if size else 0
            if request.method == "HEAD" or size == 0:
                self.counters.served(route.origin, "MISS", 0)
                await resp.prepare(request)
                if size == 0:
                    await asyncio.shield(flight.done)
                await resp.write_eof()
                return resp
            # The status line waits for the first bytes, so that a download that
            # fails before any arrived gets a proper error answer, not a reset.
            writer: AbstractStreamWriter | None = None
            pos, end = first, last + 1
            while pos < end:
                avail = min(flight.sendable(), end)
                # Send in large steps (one wake-up per STREAM_STEP, not per write
                # of the download): with many clients on one download the
                # per-send overhead, not the bytes, is what costs. Once the whole
                # body is written, all of it but the last byte goes at once,
                # while the download is verified.
                if avail > pos and (avail - pos >= STREAM_STEP or avail == end or pos == first
                                    or flight.written == flight.size
                                    or flight.verified or flight.finished):
                    if writer is None:
                        self.counters.served(route.origin, "MISS", end - first)
                        writer = await resp.prepare(request)
                        if writer is None:
                            raise ConnectionResetError("client went away")
                    if follow is not None:
                        await resp.write(avail.to_bytes(8, "big"))
                    elif reader is not None:
                        await self._send_file(request, writer, reader.fileno(), pos,
                                              avail - pos)
                    elif flight.body is not None:  # a small body, held in memory
                        await resp.write(flight.body[pos:avail])
                    pos = avail
                    continue
                if flight.failed is not None or flight.finished:
                    why = flight.failed
                    if writer is None:
                        if isinstance(why, PkgdepotError):
                            raise why
                        raise UpstreamError(f"the download of {route.path} failed: "
                                            f"{str(why) or type(why).__name__}")
                    if why is not None:
                        log.warning("%s: aborting client: %s", route.key,
                                    str(why) or type(why).__name__)
                    self.counters.aborted(route.origin, end - pos)
                    _abort(request)
                    return resp
                await flight.wait_progress(relay=follow is not None)
            await resp.write_eof()
            return resp
        finally:
            flight.release_reader()


def _relayed(headers: Any) -> dict[str, str]:
    """The leader's response headers that a worker passes on to its client."""
    return {k: v for k, v in headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() != FOLLOW_HEADER.lower()}


def _open_followed(path: str, dev: int, ino: int) -> int | None:
    """The leader's download file, by its descriptor's /proc path; None if the
    leader has closed it (or the number now names another file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (dev, ino):
        os.close(fd)
        return None
    return fd


async def _positions(up: Any) -> AsyncIterator[int]:
    """How far a followed download may be read, as the leader reports it (8
    bytes each; the latest of those that arrived together). Ends with the
    leader's stream, also when the leader cut it off (a failed download)."""
    import aiohttp

    pending = b""
    try:
        async for chunk in up.content.iter_any():
            pending += chunk
            n = len(pending) // 8
            if n:
                last, pending = pending[(n - 1) * 8:n * 8], pending[n * 8:]
                yield int.from_bytes(last, "big")
    except aiohttp.ClientError:
        return


def _follow_spec(reader: BinaryIO, size: int) -> str:
    """Where a worker process finds a download's temporary file: this
    process's descriptor of it (through /proc, valid while the download's
    readers hold it open, which includes the response telling the worker),
    the file's device and inode (to be sure the descriptor was not reused),
    and its size."""
    st = os.fstat(reader.fileno())
    return f"/proc/{os.getpid()}/fd/{reader.fileno()} {st.st_dev} {st.st_ino} {size}"


def make_server(depot: Depot) -> web.Server:
    return web.Server(depot.handle, access_log=None, max_line_size=8190,
                      max_field_size=8190, handler_cancellation=False)


def _raise_nofile() -> None:
    """Client connections and open blobs are file descriptors: use the hard
    limit, and keep the open-blob cache well inside it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    global OPEN_BLOBS
    OPEN_BLOBS = max(64, min(OPEN_BLOBS, (soft - 256) // 4 if soft > 0 else OPEN_BLOBS))


def _start_worker(config: Config, leader: str, control: str) -> subprocess.Popen[bytes]:
    """A worker process: a plain interpreter (not multiprocessing, whose
    resource-tracker process would cost another 12 MB) that reads its
    arguments from stdin."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from pkgdepot.proxy.server import worker_entry; worker_entry()"],
        stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(pickle.dumps((config, leader, os.getpid(), control)))
    proc.stdin.close()
    return proc


def worker_entry() -> None:
    """The worker's start: arguments pickled on stdin by its leader."""
    config, leader, parent, control = pickle.loads(sys.stdin.buffer.read())
    _worker_main(config, leader, parent, control)


def _worker_main(config: Config, leader: str, parent: int, control: str) -> None:
    """A worker process: serve hits on the shared port until the leader goes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s worker: %(message)s")
    # The leader's death, even by SIGKILL, sends this process SIGTERM at once
    # (the check below, every 0.25 s, is for where prctl is missing): a
    # depot restarted right after a crash finds its port free.
    prctl = libc.function("prctl")
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        def watch() -> None:  # the leader died (even by SIGKILL): so do we
            if os.getppid() != parent:
                stop.set()
            else:
                loop.call_later(0.25, watch)

        watch()
        await serve(config, stop=stop, leader=leader, control=control)

    asyncio.run(main())


def _check_port_free(family: socket.AddressFamily, host: str, port: int) -> None:
    """OSError (EADDRINUSE) if something already listens on host:port. Binding
    without SO_REUSEPORT is refused then, where the processes of one depot,
    which bind with it, would be let in alongside another."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


async def _workers_listening(procs: list[subprocess.Popen[bytes]], controls: list[str],
                             timeout: float) -> None:
    """Wait until each worker answers on its control socket, which it opens
    once it listens on the port, or has exited, or `timeout` seconds passed
    (the leader then serves without it until it is up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiting = list(zip(procs, controls, strict=True))
    while waiting:
        still = []
        for proc, control in waiting:
            if proc.poll() is not None:
                log.warning("worker process %d exited at start (status %s)", proc.pid,
                            proc.returncode)
            elif await status.ask(control) is None:
                still.append((proc, control))
        waiting = still
        if waiting and loop.time() >= deadline:
            log.warning("%d worker process(es) not listening after %g s: serving without "
                        "them until they are", len(waiting), timeout)
            return
        if waiting:
            await asyncio.sleep(0.05)


async def serve(config: Config, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None, leader: str | None = None,
                control: str | None = None) -> None:
    """Run the server until `stop` is set. With config.workers > 1, this
    process is the leader: it alone fetches from upstream and writes the store;
    worker processes share the port (SO_REUSEPORT) and hand it what they
    cannot serve from the store, over a private socket. A worker reports its
    counts on its own `control` socket."""
    _raise_nofile()
    use_log_format(config.log_format)
    quiet_client_disconnects()
    depot = Depot(config, leader=leader)
    await depot.start()
    server = make_server(depot)
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in config.listen_host else socket.AF_INET
    shared = config.workers > 1
    starts_workers = shared and leader is None
    workers: list[Any] = []
    internal_srv = None

    def cannot_listen(e: OSError) -> PkgdepotError:
        return PkgdepotError(f"cannot listen on {config.listen_host}:{config.listen_port}: "
                             f"{e.strerror}",
                             hint="is another depot or apt-cacher-ng running? pick another "
                                  "port with --listen HOST:PORT")

    if starts_workers:
        try:  # SO_REUSEPORT would quietly share the port with a depot already there
            _check_port_free(family, config.listen_host, config.listen_port)
        except OSError as e:
            await depot.close()
            raise cannot_listen(e) from e
    admin_srv = None
    if leader is None:
        try:
            admin_srv = await admin.start(depot)
        except PkgdepotError:
            await depot.close()
            raise
    if starts_workers:
        internal = f"\0pkgdepot-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # abstract socket
        internal_server = web.Server(depot.handle_internal, access_log=None,
                                     handler_cancellation=False)
        internal_srv = await loop.create_unix_server(internal_server, path=internal)
        for i in range(config.workers - 1):
            depot.worker_controls.append(f"{internal}-w{i}")
            workers.append(_start_worker(config, internal, depot.worker_controls[-1]))
        await _workers_listening(workers, depot.worker_controls, WORKER_START)
    try:
        srv = await loop.create_server(server, config.listen_host, config.listen_port,
                                       family=family, reuse_address=True, backlog=4096,
                                       reuse_port=shared or None)
    except OSError as e:
        for w in workers:
            w.terminate()
        if admin_srv is not None:
            admin_srv.close()
        await depot.close()
        raise cannot_listen(e) from e
    control_srv = None
    if control is not None:  # a worker: it answers there once it listens on the port
        control_srv = await status.serve_counts(
            control, lambda: depot.counters.export(time.time()))
    if leader is None:
        log.info("pkgdepot %s listening on %s:%d (%d process%s), data in %s", __version__,
                 config.listen_host, config.listen_port, 1 + len(workers),
                 "es" if workers else "", config.data_dir)
    if ready is not None:
        ready.set()
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        srv.close()
        if admin_srv is not None:
            admin_srv.close()
        for w in workers:
            w.terminate()
        if depot.cache is not None:  # downloads in progress may finish, and are kept
            await depot.cache.drain(SHUTDOWN_GRACE)
        await server.shutdown(2.0)
        if internal_srv is not None:
            internal_srv.close()
        if control_srv is not None:
            control_srv.close()
        await depot.close()
        for w in workers:
            try:
                await asyncio.to_thread(w.wait, 5)
            except subprocess.TimeoutExpired:
                w.kill()
