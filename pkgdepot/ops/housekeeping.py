"""The server's own housekeeping, so that no cron job is needed: last-access
times are written to the catalog in batches, and the size limit is enforced.

The store's size is measured by a walk of the blobs at start and every
RESCAN seconds; in between, the bytes this process adds are counted, so that
a burst of downloads triggers eviction within a second of passing the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pkgdepot.ops.evict import Evictor
from pkgdepot.store.fs import FsStore

log = logging.getLogger(__name__)

TICK = 1.0            # seconds between checks
FLUSH_EVERY = 5.0     # seconds between writes of access times
RESCAN = 300.0        # seconds between walks of the store (others write to it too)
RETRY = 10.0          # seconds before trying again when nothing more could be evicted


class Housekeeping:
    def __init__(self, store: FsStore, evictor: Evictor | None) -> None:
        self.store = store
        self.evictor = evictor
        self.usage: int | None = None      # bytes at the last measurement
        self._placed_at_scan = 0
        self._scanned = 0.0
        self._retry_at = 0.0
        self._flushed = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="pkgdepot housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.store.flush_access()

    def estimate(self) -> int | None:
        """The store's size now, as far as this process knows."""
        if self.usage is None:
            return None
        return self.usage + self.store.bytes_placed - self._placed_at_scan

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping failed (retried in %.0f s)", TICK)
            await asyncio.sleep(TICK)

    async def step(self) -> None:
        now = time.monotonic()
        if now - self._flushed >= FLUSH_EVERY:
            self._flushed = now
            await self.store.flush_access()
        ev = self.evictor
        if ev is None or ev.limit <= 0:
            return
        estimate = self.estimate()
        if now - self._scanned < RESCAN and (
                (estimate is not None and estimate <= ev.limit) or now < self._retry_at):
            return
        placed = self.store.bytes_placed
        usage = await ev.usage()
        self._scanned = now
        result = await ev.run(usage)
        self.usage, self._placed_at_scan = result.usage_after, placed
        if result.usage_after > ev.limit:
            self._retry_at = now + RETRY
