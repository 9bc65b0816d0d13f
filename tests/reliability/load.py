"""Load: many concurrent client connections on loopback (an asyncio load
generator on aiohttp), mixed hits and misses, plus clients that read one
byte a second. Every body is checked against its sha256; the depot's
memory and open file descriptors are sampled when the load starts and
after it ends."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import resource
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from pkgdepot.proxy.server import OPEN_BLOBS
from tests.depot import DepotProcess
from tests.reliability.killloop import generated
from tests.reliability.outcome import Outcome, fds, nofile_soft, rss
from tests.support.upstream import Upstream

HOT = 300                 # distinct files that are hits once warm
MISS_SHARE = 0.1          # the share of requests for files never asked before
BIG = "/big/b_1_all.deb"  # what the slow clients read
BIG_SIZE = 4 << 20
MAX_SIZE = 64 << 20       # the depot's cache.max_size: the store (and its catalog) stay bounded


def blob_fds(pid: int) -> int:
    """Descriptors of the process open on blobs of the store."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            n += "/blobs/" in os.readlink(f"/proc/{pid}/fd/{fd}")
    return n


def _big(path: str) -> bytes:
    return random.Random(path).randbytes(BIG_SIZE)


def _content(path: str) -> bytes | None:
    return _big(path) if path.startswith("/big/") else generated(path)


@dataclass
class Sample:
    """The depot process at one moment of the load."""

    t: float                 # seconds since the warm-up began
    rss: int
    fds: int
    mem: dict[str, int]      # its own tables (status.json "memory")


async def _sampler(pid: int, port: int, every: float, stop: asyncio.Event,
                   samples: list[Sample], t0: float) -> None:
    """Sample the depot every `every` seconds until `stop` is set."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while not stop.is_set():
            mem: dict[str, int] = {}
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with session.get(f"http://127.0.0.1:{port}/_pkgdepot/status.json") as r:
                    mem = (await r.json()).get("memory", {})
            samples.append(Sample(time.monotonic() - t0, rss(pid), fds(pid), mem))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


@dataclass
class _Stats:
    done: list[int]
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bytes_verified: int = 0
    measured_from: float = 0.0   # when the measured phase began (seconds into the run)


def plateau(samples: list[Sample], start: float, out: Outcome, growth: int) -> None:
    """Memory after the warm-up (`start` seconds into the run) must stay flat:
    the highest RSS of the measured phase's second half may exceed that of
    its first half by at most `growth` bytes (a leak climbs all along; a
    burst of concurrent downloads only lifts the level once)."""
    measured = [s for s in samples if s.t >= start]
    if len(measured) < 4:
        out.error(f"only {len(measured)} memory samples after the warm-up")
        return
    step = max(1, len(samples) // 12)
    shown = samples[::step] if samples[-1] in samples[::step] else [*samples[::step],
                                                                     samples[-1]]
    out.notes.append("depot RSS through the run: " + ", ".join(
        f"{s.t:.0f} s {s.rss >> 20} MB" for s in shown) + f" (the warm-up ends at {start:.0f} s)")
    half = len(measured) // 2
    first, second = max(s.rss for s in measured[:half]), max(s.rss for s in measured[half:])
    entries = [s.mem.get("catalog_entries", 0) for s in measured]
    opened = [s.mem.get("open_blobs", 0) for s in measured]
    out.notes.append(
        f"after the warm-up: RSS {measured[0].rss >> 20} MB, highest {first >> 20} MB in the "
        f"first half and {second >> 20} MB in the second, {measured[-1].rss >> 20} MB at the "
        f"end; the depot's own tables: catalog entries in memory {min(entries)}-{max(entries)} "
        f"(one per stored file; cache.max_size bounds them), open blobs "
        f"{min(opened)}-{max(opened)} (an LRU of at most {OPEN_BLOBS})")
    out.check(second <= first + growth, f"memory climbed after the warm-up: highest "
                                        f"{first >> 20} MB, then {second >> 20} MB")


def raise_nofile(need: int) -> None:
    """This process opens a socket per client connection: raise its soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


async def _client(n: int, session: aiohttp.ClientSession, base: str, hot: dict[str, str],
                  deadline: float, stats: _Stats, rng: random.Random) -> None:
    hot_paths = list(hot)
    k = 0
    while time.monotonic() < deadline:
        if rng.random() < MISS_SHARE:
            path = f"/gen/miss/{n}/{k}/m_1_all.deb"
            want = hashlib.sha256(generated(path)).hexdigest()
        else:
            path = rng.choice(hot_paths)
            want = hot[path]
        k += 1
        t0 = time.monotonic()
        try:
            async with session.get(base + path) as r:
                body = await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            stats.errors.append(f"client {n}: {path}: {type(e).__name__}: {e}")
            continue
        stats.latencies.append(time.monotonic() - t0)
        if status != 200 or hashlib.sha256(body).hexdigest() != want:
            stats.errors.append(f"client {n}: {path}: HTTP {status}, {len(body)} bytes")
            continue
        stats.bytes_verified += len(body)
        stats.done[n] += 1


async def _slow_reader(port: int, target: str, seconds: float) -> int:
    """A client that reads one byte a second: how many it got."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(s, ("127.0.0.1", port))
    await loop.sock_sendall(s, f"GET {target} HTTP/1.1\r\nHost: depot\r\n\r\n".encode())
    got = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = await loop.sock_recv(s, 1)
            if not chunk:
                break
            got += 1
            await asyncio.sleep(1.0)
    finally:
        s.close()
    return got


async def _run(port: int, up_port: int, connections: int, seconds: float, warm: float,
               slow: int, out: Outcome, sample: tuple[int, ...], every: float,
               samples: list[Sample]) -> _Stats:
    base = f"http://127.0.0.1:{port}/127.0.0.1:{up_port}"
    hot = {f"/gen/hot/{i}/h_1_all.deb": "" for i in range(HOT)}
    for p in hot:
        hot[p] = hashlib.sha256(generated(p)).hexdigest()
    stats = _Stats([0] * connections)
    pid = sample[0]
    stop = asyncio.Event()
    t0 = time.monotonic()
    sampler = asyncio.create_task(_sampler(pid, port, every, stop, samples, t0))
    conn = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        # warm: every hot file once (these are the first misses), and the big one
        for p in [*hot, BIG]:
            async with session.get(base + p) as r:
                body = await r.read()
                out.check(r.status == 200 and body == _content(p), f"warm-up {p}: HTTP "
                                                                    f"{r.status}")
        # then the same load for a while: memory and descriptors reach their
        # working level (allocator pools, open-blob cache) before the first sample
        warm_until = time.monotonic() + warm
        await asyncio.gather(*(_client(n, session, base, hot, warm_until, _Stats(
            [0] * connections), random.Random(-n)) for n in range(connections)))
    await asyncio.sleep(1.0)  # idle: the server has closed the warm-up connections
    out.rss_start, out.fds_start = rss(pid), fds(pid)
    stats.measured_from = time.monotonic() - t0
    blobs_start = blob_fds(pid)
    conn = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        deadline = time.monotonic() + seconds
        slow_tasks = [asyncio.create_task(_slow_reader(port, f"/127.0.0.1:{up_port}{BIG}",
                                                       seconds)) for _ in range(slow)]
        peak = [0]

        async def watch() -> None:
            while time.monotonic() < deadline:
                peak[0] = max(peak[0], fds(pid))
                await asyncio.sleep(1)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(_client(n, session, base, hot, deadline, stats,
                                       random.Random(n)) for n in range(connections)))
        slow_got = await asyncio.gather(*slow_tasks)
        await watcher
    await asyncio.sleep(1.0)  # idle again
    out.rss_end, out.fds_end = rss(pid), fds(pid)
    stop.set()
    await sampler
    blobs_end = blob_fds(pid)
    out.notes.append(f"depot fds at the peak of the load: {peak[0]}; when idle, before and "
                     f"after: {out.fds_start - blobs_start} + {blobs_start} blobs held open "
                     f"for sendfile -> {out.fds_end - blobs_end} + {blobs_end} (the open-blob "
                     f"cache is an LRU of at most {OPEN_BLOBS})")
    out.check(out.fds_end - blobs_end <= out.fds_start - blobs_start + 4,
              f"descriptors other than blobs grew: {out.fds_start - blobs_start} -> "
              f"{out.fds_end - blobs_end}")
    out.check(blobs_end <= OPEN_BLOBS, f"{blobs_end} blobs held open")
    out.notes.append(f"slow clients (1 byte/s) read {', '.join(map(str, slow_got))} bytes each "
                     "and were still connected at the end" if all(slow_got) else
                     f"slow clients read {slow_got}")
    out.check(all(g >= seconds * 0.25 for g in slow_got),
              f"a slow client was cut off: {slow_got}")
    return stats


def load(work: Path, connections: int = 1000, seconds: float = 25, slow: int = 3,
         p99_bound: float = 15.0, warm: float = 8.0, every: float = 5.0,
         samples: list[Sample] | None = None, max_size: int = MAX_SIZE,
         growth: int = 32 << 20) -> Outcome:
    """`connections` clients for `warm` seconds (not measured), then for
    `seconds` with `slow` one-byte-a-second readers beside them."""
    out = Outcome(f"load: {connections} connections for {seconds:.0f} s")
    raise_nofile(connections * 2 + 512)
    t0 = time.monotonic()
    root = work / "www"
    root.mkdir(parents=True)
    with Upstream(root) as up:
        up.generate("/gen/", generated)
        up.generate("/big/", _big)
        cfg = ('[upstream]\nallow_networks = ["127.0.0.0/8"]\n'
               f'[cache]\nmax_size = "{max_size >> 20}M"\n')
        with DepotProcess(work / "depot", cfg) as depot:
            assert depot.proc is not None
            pid = depot.proc.pid
            limit = nofile_soft(pid)
            out.notes.append(f"depot's soft RLIMIT_NOFILE after start: {limit}")
            out.check(limit >= connections + 256,
                      f"the depot's file limit ({limit}) cannot hold {connections} clients")
            samples = [] if samples is None else samples
            stats = asyncio.run(_run(depot.port, up.port, connections, seconds, warm, slow,
                                     out, (pid,), every, samples))
    plateau(samples, stats.measured_from, out, growth)
    out.requests = len(stats.latencies) + len(stats.errors)
    out.errors += stats.errors[:50]
    out.bytes_verified = stats.bytes_verified
    lat = sorted(stats.latencies)
    p50 = statistics.median(lat) if lat else 0.0
    p99 = lat[int(len(lat) * 0.99) - 1] if lat else 0.0
    least, most = min(stats.done), max(stats.done)
    out.notes.append(f"latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
                     f"max {lat[-1] * 1000 if lat else 0:.0f} ms")
    out.notes.append(f"requests per client: min {least}, median "
                     f"{statistics.median(stats.done):.0f}, max {most}")
    out.check(least >= 1, "a client completed no request")
    out.check(p99 <= p99_bound, f"p99 latency {p99:.1f} s above {p99_bound} s")
    out.check(out.rss_end <= out.rss_start + growth,
              f"memory grew: {out.rss_start >> 20} -> {out.rss_end >> 20} MB")
    out.seconds = time.monotonic() - t0
    return out
