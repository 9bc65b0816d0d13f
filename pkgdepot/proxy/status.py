"""The depot's own pages: the status page, its JSON, snapshot diffs, and
Prometheus metrics.

    GET /                              the status page (status.html, no external assets)
    GET /_pkgdepot/status.json         everything the page shows
    GET /_pkgdepot/diff/NAME/A/B       packages added, removed, upgraded between two snapshots
    GET /metrics, /_pkgdepot/metrics   Prometheus text format

With `server.workers > 1` every request for these pages is answered by the
leader: it asks each worker for its counts over the worker's private control
socket (`serve_counts` / `ask`) and sums them with its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pkgdepot import __version__
from pkgdepot.errors import NotFound
from pkgdepot.memory import malloc_info
from pkgdepot.metrics import NO_ORIGIN, OTHER, RESULTS, merge_counts, render_prometheus
from pkgdepot.ops.evict import walk_files

if TYPE_CHECKING:
    from pkgdepot.proxy.server import Depot
    from pkgdepot.store.fs import FsStore

log = logging.getLogger(__name__)
SERVER = f"pkgdepot/{__version__}"
STORE_SCAN_EVERY = 15.0      # seconds between walks of the blob directory
SNAPSHOTS_SHOWN = 100        # newest snapshots per repository on the page
ASK_TIMEOUT = 3.0
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Usage:
    bytes: int
    files: int
    fs_total: int
    fs_free: int


def scan_store(data_dir: Path) -> Usage:
    """Bytes and number of blobs, and the file system's size and free space.
    Blocking (a walk of blobs/): call in a thread."""
    total = files = 0
    for f in walk_files(data_dir / "blobs"):
        with contextlib.suppress(FileNotFoundError):
            total += f.stat(follow_symlinks=False).st_size
            files += 1
    try:
        du = shutil.disk_usage(data_dir)
        fs_total, fs_free = du.total, du.free
    except OSError:
        fs_total = fs_free = 0
    return Usage(total, files, fs_total, fs_free)


class StoreUsage:
    """`scan_store` every STORE_SCAN_EVERY seconds (a walk of the blobs costs
    about a second per million files); in between, what this process has
    stored since is added."""

    def __init__(self, store: FsStore) -> None:
        self.store = store
        self._last: Usage | None = None
        self._at = 0.0
        self._placed = (0, 0)
        self._lock = asyncio.Lock()

    async def get(self) -> Usage:
        async with self._lock:
            if self._last is None or time.monotonic() - self._at > STORE_SCAN_EVERY:
                placed = (self.store.bytes_placed, self.store.files_placed)
                self._last = await asyncio.to_thread(scan_store, self.store.root)
                self._at, self._placed = time.monotonic(), placed
            last = self._last
            return dataclasses.replace(
                last, bytes=last.bytes + self.store.bytes_placed - self._placed[0],
                files=last.files + self.store.files_placed - self._placed[1])


# -- counts of worker processes ---------------------------------------------


async def serve_counts(address: str, export: Callable[[], dict[str, Any]]
                       ) -> asyncio.AbstractServer:
    """A worker's control socket: each connection gets `export()` as JSON."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(export()).encode())
            await writer.drain()
        except ConnectionError:
            pass  # the leader only checked that this worker is up
        finally:
            writer.close()

    return await asyncio.start_unix_server(answer, path=address)


async def ask(address: str) -> dict[str, Any] | None:
    """A worker's counts, or None when it does not answer in time."""
    try:
        async with asyncio.timeout(ASK_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(address)
            try:
                data = await reader.read()
            finally:
                writer.close()
        parsed: dict[str, Any] = json.loads(data)
        return parsed
    except (OSError, TimeoutError, ValueError) as e:
        log.debug("worker at %r did not report its counts (starting?): %s", address, e)
        return None


# -- the status -------------------------------------------------------------


def _repositories(depot: Depot, origins: dict[str, list[int]],
                  upstreams: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for repo in depot.config.repos.values():
        out.append({"name": repo.name, "kind": "mirror" if repo.mirror else "repository",
                    "upstreams": list(repo.upstreams), "keyring": repo.keyring is not None})
    named = set(depot.config.repos)
    for origin in sorted(origins):
        if origin in named or origin in (NO_ORIGIN, OTHER):
            continue
        bases = sorted(b for b in upstreams if b.split("://", 1)[-1] == origin)
        out.append({"name": origin, "kind": "host", "upstreams": bases or [f"http://{origin}"],
                    "keyring": False})
    return out


def memory(depot: Depot) -> dict[str, int]:
    """This process's resident memory and descriptors, and what its in-memory
    tables hold (all bounded but the catalog's entries, one per stored file)."""
    cache = depot.cache
    return {"rss": _proc_rss(), "fds": len(os.listdir("/proc/self/fd")),
            "catalog_entries": depot.store.entry_count(),
            "open_blobs": len(depot.open_blobs),
            "flights": len(cache.flights) if cache is not None else 0,
            "negative": len(cache.negative) if cache is not None else 0,
            "python_blocks": sys.getallocatedblocks(), **malloc_info()}


def _proc_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def collect(depot: Depot) -> dict[str, Any]:
    """Everything the page and /metrics show, summed over the server's processes."""
    now = time.time()
    stats = depot.cache.stats if depot.cache is not None else None
    fetched = stats.bytes_from_upstream if stats is not None else 0
    parts = [depot.counters.export(now, fetched)]
    answers = await asyncio.gather(*(ask(a) for a in depot.worker_controls))
    parts += [a for a in answers if a is not None]
    counts = merge_counts(parts)
    usage = await depot.store_usage.get()
    cache: dict[str, Any] = {
        "fetched_by_origin": dict(stats.fetched_by_origin) if stats else {},
        "upstreams": {b: h.as_dict() for b, h in stats.upstreams.items()} if stats else {},
        "verify_failures": stats.verify_failures if stats else 0,
        "upstream_requests": stats.upstream_requests if stats else 0,
        "bytes_from_upstream": fetched,
    }
    snapshots: dict[str, Any] = {}
    for name in depot.config.repos:
        history = await depot.snapshots.history(name)
        snapshots[name] = {"count": len(history),
                           "items": [s.as_dict() for s in history[:SNAPSHOTS_SHOWN]]}
    flights = depot.cache.flights.values() if depot.cache is not None else ()
    return {
        "version": __version__, "now": now, "started": depot.started,
        "processes": len(parts), "workers_configured": depot.config.workers,
        "requests_per_process": [sum(sum(c[:len(RESULTS)]) for c in p["origins"].values())
                                 for p in parts],
        "counts": {"origins": counts["origins"],
                   "series": [[m, v] for m, v in counts["series"]]},
        "cache": cache,
        "repos": _repositories(depot, counts["origins"], cache["upstreams"]),
        "in_flight": [{"key": f.key, "written": f.written, "size": f.size} for f in flights],
        "store": {"bytes": usage.bytes, "files": usage.files,
                  "limit": int(getattr(depot.config, "max_size", 0) or 0),
                  "fs_total": usage.fs_total, "fs_free": usage.fs_free,
                  "data_dir": str(depot.config.data_dir)},
        "snapshots": snapshots,
        "memory": memory(depot),
        "errors": [{"time": t, "kind": k, "message": m}
                   for t, k, m in reversed(stats.recent_errors)] if stats else [],
    }


# -- the pages --------------------------------------------------------------


def _page_html() -> bytes:
    return (resources.files("pkgdepot.proxy") / "status.html").read_bytes()


def _json(data: object) -> web.Response:
    return web.Response(text=json.dumps(data, indent=1) + "\n", content_type="application/json",
                        headers={"Server": SERVER, "Cache-Control": "no-store"})


async def _diff(depot: Depot, rest: str) -> web.Response:
    from pkgdepot.diff import diff

    parts = rest.split("/")
    if len(parts) != 3 or not all(parts):
        raise NotFound("use /_pkgdepot/diff/NAME/A/B (A and B: YYYYMMDDTHHMMSSZ, a tag or latest)")
    name, a, b = parts
    if name not in depot.config.repos:
        raise NotFound(f"no repository named {name!r}")
    result = await diff(depot.store, depot.snapshots, name, a, b)
    return _json(result.as_dict())


async def _status_page(depot: Depot) -> web.Response:
    body = await asyncio.to_thread(_page_html)
    return web.Response(body=body, content_type="text/html", charset="utf-8",
                        headers={"Server": SERVER, "Cache-Control": "no-cache"})


async def _status_json(depot: Depot) -> web.Response:
    return _json(await collect(depot))


async def _metrics(depot: Depot) -> web.Response:
    text = render_prometheus(await collect(depot))
    return web.Response(text=text, headers={"Server": SERVER, "Cache-Control": "no-store",
                                            "Content-Type": PROMETHEUS_TYPE})


PAGES: dict[str, Callable[[Depot], Awaitable[web.Response]]] = {
    "": _status_page, "_pkgdepot/status.json": _status_json,
    "metrics": _metrics, "_pkgdepot/metrics": _metrics}


async def own_page(depot: Depot, path: str) -> web.Response:
    """Answer GET/HEAD for one of the depot's own pages (leader only)."""
    page = PAGES.get(path)
    if page is not None:
        return await page(depot)
    if path.startswith("_pkgdepot/diff/"):
        return await _diff(depot, path.removeprefix("_pkgdepot/diff/"))
    raise NotFound(f"/{path}: no such page of the depot",
                   hint="the status page is /, metrics are at /metrics")


__all__ = ["StoreUsage", "ask", "collect", "own_page", "serve_counts"]
