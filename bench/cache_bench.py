#!/usr/bin/env python3
"""Cache benchmark: pkgdepot against nginx and apt-cacher-ng, all on 127.0.0.1.

Run as root from the repository root (after `sh bench/setup.sh`):

    .venv/bin/python bench/cache_bench.py [--quick] [--only NAME] [--out bench/results/cache.json]

Every server runs from a private config under one temp dir, on free ports of
127.0.0.1 (and, for the MSS 1460 variant, inside a network namespace that this
script creates and deletes). See bench/README.md for what is measured and why.
"""

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import http.client
import importlib.metadata
import json
import os
import platform
import queue
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")

TARGETS = ("nginx-direct", "nginx-cache", "apt-cacher-ng", "pkgdepot")
BASELINE = "nginx-direct"
TESTS = ("hit", "rps", "stampede", "cold", "memory")
#: Per-connection rate of the upstream the caches fetch from (nginx limit_rate).
UPSTREAM_RATE = "100m"

POOL_DIR = "debian/pool/main/b/bench"
BIG_SIZE = 100 * 1000 * 1000
SMALL_SIZE = 4 * 1024
MEDIUM_SIZE = 64 * 1024
N_COLD = 500
STAMPEDE_CLIENTS = 16
COLD_CLIENTS = 16
HIT_CLIENTS = 8
RPS_CONNECTIONS = 64
IDLE_CONNECTIONS = 1000
IDLE_HOLD_S = 5.0
MSS = 1460


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class SkipTarget(Exception):
    """The target cannot be benchmarked here (missing, failed to start)."""


class BenchError(Exception):
    """A measurement failed in a way that makes its numbers meaningless."""


# --------------------------------------------------------------------------- processes


def wait_reading_stdin(pids: Sequence[int], timeout: float) -> bool:
    """Wait until each process blocks reading a pipe (its stdin; the kernel's
    wait channel says so). False if some did not within `timeout`."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        try:
            left = [p for p in left
                    if not Path(f"/proc/{p}/wchan").read_text().endswith("pipe_read")]
        except OSError:
            return False  # exited already: its output says why
        if left:
            time.sleep(0.005)
    return not left


def child_env() -> dict[str, str]:
    """The environment for every child: no proxy settings, C locale."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    # as installed, Python keeps its bytecode caches: a shell that forbids
    # writing them would have every pkgdepot start compile its modules anew
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["LC_ALL"] = "C"
    return env


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name) of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        yield int(entry), stat[stat.rfind(")") + 2 :].split()


def group_members(pgid: int) -> list[int]:
    return [pid for pid, fields in proc_stats() if int(fields[2]) == pgid]


class UpstreamHit(NamedTuple):
    """A line of the origin's log of the caches' fetches."""

    uri: str
    status: int
    bytes: int
    seconds: float  # nginx's $request_time


class Proc:
    """A child in its own session and process group.

    The leader is never reaped before stop(): while it is an unreaped zombie
    its pid (the group id) cannot be reused, so signalling the group can only
    reach processes this script started.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        ns: str | None = None,
        stdout: int | None = None,
        stdin: int | None = None,
    ) -> None:
        self.name = name
        full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
        self.argv = full
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=stdout if stdout is not None else self._log,
            stderr=self._log,
            start_new_session=True,
            env=child_env(),
        )
        self.pid = self.popen.pid
        self.stopped = False

    def exited(self) -> bool:
        """True once the leader has exited (without reaping it)."""
        if self.stopped:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def exit_status(self) -> str:
        """How the leader ended, without reaping it."""
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return f"exit {self.popen.returncode}"
        if info is None:
            return "running"
        if info.si_code == os.CLD_EXITED:
            return f"exit {info.si_status}"
        return f"signal {info.si_status}"

    def wait_exit(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.exited():
                return True
            time.sleep(0.02)
        return self.exited()

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def _others_in_group(self) -> list[int]:
        return [p for p in group_members(self.pid) if p != self.pid]

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.stopped:
            return self.popen.returncode
        if not self.exited():
            self._signal_group(signal.SIGTERM)
            if not self.wait_exit(timeout):
                self._signal_group(signal.SIGKILL)
                self.wait_exit(5)
        # Leader gone (an unreaped zombie): clear out anything left in its group.
        if self._others_in_group():
            self._signal_group(signal.SIGKILL)
            end = time.monotonic() + 5
            while self._others_in_group() and time.monotonic() < end:
                time.sleep(0.05)
        rc = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            rc = self.popen.wait(5)
        self.stopped = True
        self._log.close()
        return rc

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


class ProcessManager:
    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[Proc] = []
        self._n = 0

    def spawn(
        self, name: str, argv: Sequence[str], ns: str | None = None, stdout: int | None = None,
        stdin: int | None = None,
    ) -> Proc:
        self._n += 1
        p = Proc(name, argv, self.logdir / f"{self._n:03d}-{name}.log", ns=ns, stdout=stdout,
                 stdin=stdin)
        self.procs.append(p)
        return p

    def run(self, name: str, argv: Sequence[str], timeout: float, ns: str | None = None) -> str:
        """Run to completion (bounded by timeout) and return stdout."""
        p = self.spawn(name, argv, ns=ns, stdout=subprocess.PIPE)
        try:
            out, _ = p.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.stop(2)
            raise BenchError(f"{name} did not finish within {timeout:.0f}s") from None
        p.stopped = True
        p._log.close()
        self.procs.remove(p)
        if p.popen.returncode != 0:
            raise BenchError(f"{name} exited {p.popen.returncode}: {p.log_tail()}")
        return out.decode(errors="replace")

    def stop(self, p: Proc) -> None:
        t0 = time.monotonic()
        p.stop()
        if time.monotonic() - t0 > 2:
            log(f"stopping {p.name} took {time.monotonic() - t0:.1f}s")
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            try:
                t0 = time.monotonic()
                p.stop(5)
                if time.monotonic() - t0 > 2:
                    log(f"stopping {p.name} took {time.monotonic() - t0:.1f}s")
            except Exception as e:  # keep going: the others must still be stopped
                log(f"stopping {p.name} (pid {p.pid}) failed: {e}")
        self.procs.clear()


_used_ports: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 in 20000-32767.

    Below the usual ephemeral range (32768-60999), so no outgoing connection
    can take it, and below 32768 because apt-cacher-ng 3.7 cannot bind ports
    above 32767 ("Error resolving address for binding: Success").
    """
    rng = random.Random()
    for _ in range(1000):
        port = rng.randint(20000, 32767)
        if port in _used_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used_ports.add(port)
        return port
    raise BenchError("no free port in 20000-32767")


# --------------------------------------------------------------------------- network namespace

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move the calling thread (only) into network namespace `name`."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def in_ns(ns: str | None, fn: Callable[[], T]) -> T:
    """Run fn in the namespace ns (in a helper thread) or right here."""
    if ns is None:
        return fn()
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            enter_netns(ns)
            box["v"] = fn()
        except BaseException as e:
            box["e"] = e

    t = threading.Thread(target=runner, daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.2)
    if "e" in box:
        raise box["e"]
    return box["v"]  # type: ignore[no-any-return]


class NetNs:
    """A network namespace with loopback routes that advertise MSS 1460."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.created = False

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.created = True
        cmds = [
            ["link", "set", "lo", "up"],
            # Both loopback routes of the local table: connections to
            # 127.0.0.1 use the /32 one, anything else in 127/8 the /8 one.
            *(
                [
                    "route", "change", "local", dst, "dev", "lo", "table", "local",
                    "proto", "kernel", "scope", "host", "src", "127.0.0.1",
                    "advmss", str(MSS),
                ]
                for dst in ("127.0.0.1", "127.0.0.0/8")
            ),
        ]
        for c in cmds:
            subprocess.run(["ip", "-n", self.name, *c], check=True, capture_output=True)

    def delete(self) -> None:
        if self.created:
            r = subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            if r.returncode != 0:
                log(f"ip netns del {self.name} failed: {r.stderr.decode().strip()}")
            self.created = False


def measured_mss(port: int, ns: str | None) -> int:
    def probe() -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            return int(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))

    return in_ns(ns, probe)


# --------------------------------------------------------------------------- memory


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, fields in proc_stats():
        children.setdefault(int(fields[1]), []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_memory_kb(root: int) -> tuple[int, int, int]:
    """(RSS, PSS, number of processes) summed over root and its descendants."""
    rss = pss = n = 0
    for pid in process_tree(root):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        n += 1
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss, n


class MemSampler:
    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.rss: list[int] = []
        self.pss: list[int] = []
        self.nprocs = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        rss, pss, n = tree_memory_kb(self.pid)
        if n:
            self.rss.append(rss)
            self.pss.append(pss)
            self.nprocs = max(self.nprocs, n)

    def __enter__(self) -> "MemSampler":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    def summary(self) -> dict[str, float]:
        if not self.rss:
            return {}
        return {
            "rss_max_mb": max(self.rss) / 1024,
            "rss_mean_mb": statistics.fmean(self.rss) / 1024,
            "pss_max_mb": max(self.pss) / 1024,
            "processes": self.nprocs,
        }


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(stat: str) -> tuple[int, float]:
    """(ppid, utime+stime+cutime+cstime in s) from a /proc/PID/stat line."""
    f = stat[stat.rfind(")") + 2 :].split()
    return int(f[1]), (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK_TCK


@dataclass
class CpuSnapshot:
    """CPU seconds: the machine's tasks, irq/softirq and steal time (/proc/stat),
    the server's process tree, kernel threads (ksoftirqd: loopback traffic
    processed there), this script's reaped children (wrk, curl) and itself."""

    t: float
    tasks: float
    irq: float
    steal: float
    server: float
    kthreads: float
    children: float
    me: float

    @staticmethod
    def take(server_pid: int) -> "CpuSnapshot":
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        tree = set(process_tree(server_pid))
        server = kthreads = 0.0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                ppid, cpu = _proc_cpu(Path(f"/proc/{entry}/stat").read_text())
            except OSError:
                continue
            # utime + stime, plus cutime + cstime: reaped children count once
            if int(entry) in tree:
                server += cpu
            elif ppid == 2 or entry == "2":
                kthreads += cpu
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return CpuSnapshot(
            time.monotonic(), (user + nice + system) / CLK_TCK, (irq + softirq) / CLK_TCK,
            steal / CLK_TCK, server, kthreads, ch.ru_utime + ch.ru_stime,
            me.ru_utime + me.ru_stime,
        )

    def since(self, old: "CpuSnapshot") -> dict[str, float]:
        wall = self.t - old.t
        server = self.server - old.server
        client = self.children - old.children + self.me - old.me
        kthreads = self.kthreads - old.kthreads
        other = max(0.0, self.tasks - old.tasks - server - client - kthreads)
        total = wall * len(os.sched_getaffinity(0))

        def pct(x: float) -> float:
            return 100 * x / total if total > 0 else 0.0

        return {
            "wall_s": wall,
            "server_s": server,
            "client_s": client,
            "kernel_threads_s": kthreads,
            "irq_s": self.irq - old.irq,
            "steal_s": self.steal - old.steal,
            "other_s": other,
            "server_pct": pct(server),
            "client_pct": pct(client),
            "kernel_threads_pct": pct(kthreads),
            "other_pct": pct(other),
            "steal_pct": pct(self.steal - old.steal),
        }


# --------------------------------------------------------------------------- pool


@dataclass
class Pool:
    root: Path
    big: str
    small: list[str]
    medium: list[str]
    cold: list[str]
    sha256: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def make_pool(root: Path, n: int) -> Pool:
    d = root / POOL_DIR
    d.mkdir(parents=True)

    def write(name: str, size: int, keep_hash: bool = False) -> str:
        rel = f"{POOL_DIR}/{name}"
        h = hashlib.sha256()
        with open(root / rel, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 1 << 20))
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
        pool.sizes[rel] = size
        if keep_hash:
            pool.sha256[rel] = h.hexdigest()
        return rel

    pool = Pool(root, "", [], [], [])
    pool.big = write("bench-100m_1.0_all.deb", BIG_SIZE, keep_hash=True)
    pool.small = [
        write(f"bench-4k-{i:05d}_1.0_all.deb", SMALL_SIZE, keep_hash=i <= 20)
        for i in range(1, n + 1)
    ]
    pool.medium = [
        write(f"bench-64k-{i:05d}_1.0_all.deb", MEDIUM_SIZE, keep_hash=i <= 20)
        for i in range(1, n + 1)
    ]
    pool.cold = [write(f"bench-cold-{i:05d}_1.0_all.deb", SMALL_SIZE) for i in range(1, N_COLD + 1)]
    return pool


# --------------------------------------------------------------------------- HTTP clients


def http_get(
    conn: http.client.HTTPConnection, path: str, want_hash: bool = False
) -> tuple[int, int, str | None]:
    conn.request("GET", path)
    resp = conn.getresponse()
    h = hashlib.sha256() if want_hash else None
    n = 0
    while True:
        chunk = resp.read(1 << 20)
        if not chunk:
            break
        n += len(chunk)
        if h is not None:
            h.update(chunk)
    if resp.will_close:
        conn.close()
    return resp.status, n, h.hexdigest() if h is not None else None


@dataclass
class FetchResult:
    seconds: float
    ok: int
    failures: list[str]
    hashes: dict[str, str]
    retries: int = 0  # reused keep-alive connection closed by the server: sent again


# A server may close an idle keep-alive connection just as the next request
# goes out; like any HTTP client (apt too) we then send a GET again, once, on
# a new connection (RFC 9112, 9.3.1). apt-cacher-ng 3.7 does this often.
RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def fetch_many(
    port: int,
    paths: Sequence[str],
    sizes: Sequence[int],
    concurrency: int,
    ns: str | None = None,
    hash_paths: frozenset[str] = frozenset(),
    timeout: float = 60.0,
) -> FetchResult:
    """GET every path once with `concurrency` keep-alive clients; check status and size."""
    work: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
    for item in zip(paths, sizes, strict=True):
        work.put(item)
    lock = threading.Lock()
    failures: list[str] = []
    hashes: dict[str, str] = {}
    ok = [0]
    retries = [0]
    stop = threading.Event()

    def worker() -> None:
        if ns:
            enter_netns(ns)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            while not stop.is_set():
                try:
                    path, size = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    reused = conn.sock is not None
                    try:
                        status, n, digest = http_get(conn, path, path in hash_paths)
                    except RETRYABLE:
                        if not reused:
                            raise
                        conn.close()
                        with lock:
                            retries[0] += 1
                        status, n, digest = http_get(conn, path, path in hash_paths)
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    with lock:
                        failures.append(f"{path}: {type(e).__name__}: {e}")
                    continue
                with lock:
                    if status != 200 or n != size:
                        failures.append(f"{path}: status {status}, {n} bytes (want {size})")
                    else:
                        ok[0] += 1
                        if digest:
                            hashes[path] = digest
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    t0 = time.monotonic()
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    finally:
        stop.set()
    return FetchResult(time.monotonic() - t0, ok[0], failures, hashes, retries[0])


def probe_http(port: int, path: str, ns: str | None) -> int | None:
    def once() -> int | None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    return in_ns(ns, once)


def wait_ready(
    proc: Proc, port: int, path: str, ns: str | None, want_200: bool, timeout: float
) -> None:
    end = time.monotonic() + timeout
    last: int | None = None
    while time.monotonic() < end:
        if proc.exited():
            raise SkipTarget(
                f"{proc.name} exited during start-up ({proc.exit_status()}):\n{proc.log_tail()}"
            )
        last = probe_http(port, path, ns)
        if last is not None and (last == 200 or not want_200):
            return
        time.sleep(0.1)
    raise SkipTarget(f"{proc.name} not ready after {timeout:.0f}s (last status {last})")


# --------------------------------------------------------------------------- servers

NGINX_COMMON = """\
worker_processes auto;
worker_rlimit_nofile 16384;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush {nopush};
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000;
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{body}
}}
"""

ORIGIN_BODY = """\
    log_format upstream '$request_uri $status $body_bytes_sent $request_time';
    # nginx-direct: what clients hit for the baseline numbers.
    server {{
        listen 127.0.0.1:{direct_port} backlog=4096;
        root {pool};
    }}
    # The same pool for the caching peers, with an access log of every
    # upstream fetch (bytes fetched from the origin, hit checks).
    server {{
        listen 127.0.0.1:{up_port} backlog=4096;
        root {pool};
        access_log {prefix}/upstream.log upstream;
        # A WAN-like upstream: each connection gets at most UPSTREAM_RATE, so
        # that the 16-client stampede measures sharing one upstream download
        # (a plain fetch of the 100 MB file takes about a second), not how fast
        # loopback can copy 1.6 GB.
        limit_rate {up_rate};
    }}
"""

NGINX_CACHE_BODY = """\
    proxy_cache_path {cache} levels=1:2 keys_zone=bench:64m max_size=20g inactive=7d
                     use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{up_port};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        # With tcp_nopush on, nginx 1.22 answers each 64 KB cache hit over
        # loopback (MSS ~64 KB) about 40 ms late: one full segment, then the
        # corked tail waits for the client's delayed ACK (1.6k instead of
        # 30k+ req/s). Not seen with MSS 1460 or on nginx-direct; off here so
        # the peer is not handicapped by a loopback artefact.
        tcp_nopush off;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_key $uri;
            proxy_cache_valid 200 1d;
            proxy_cache_lock on;
            # The defaults (5s) would let waiting requests go to the origin
            # themselves if the first download is slow; keep them waiting.
            proxy_cache_lock_timeout 120s;
            proxy_cache_lock_age 120s;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
"""

ACNG_CONF = """\
# Private apt-cacher-ng config for the benchmark: no Remap-* lines, so no
# request is ever mapped to a real archive; only /127.0.0.1:PORT/... URLs.
CacheDir: {cache}
LogDir: {logdir}
SupportDir: /usr/lib/apt-cacher-ng
Port: {port}
BindAddress: 127.0.0.1
SocketPath: {state}/socket
PidFile: {state}/pid
ForeGround: 1
VerboseLog: 1
ExThreshold: 4
# Without this, /HOST:PORT/path requests for any port but 80 get
# "403 Configuration error (confusing proxy mode) or prohibited port".
AllowUserPorts: {up_port}
# Room for the 1000-connection test (it still answers only ~150 at once).
MaxConThreads: 3000
"""


@dataclass
class Running:
    name: str
    proc: Proc
    port: int
    url_prefix: str  # prepended to pool paths: "" or "/127.0.0.1:UPPORT"
    ns: str | None
    owned: bool = True  # False for nginx-direct: the origin outlives it

    def path(self, rel: str) -> str:
        return f"{self.url_prefix}/{rel}"


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.pm = ProcessManager(tmp / "logs")
        self.pool: Pool
        self.direct_port = free_port()
        self.up_port = free_port()
        self.origins: dict[str | None, Proc] = {}
        self.netns: NetNs | None = None
        self.ns_name: str | None = None
        self.ns_reason = ""
        self.quick: bool = args.quick
        self.dur = 3 if self.quick else 10
        self.reps: int = args.reps if args.reps else (1 if self.quick else 3)
        self.meta: dict[str, Any] = {}
        self.noise: dict[str, float] = {}  # target -> max % CPU others took during its tests
        self.pkgdepot_bin = Path(args.pkgdepot)

    # -- origin

    def start_origin(self, ns: str | None) -> Proc:
        prefix = self.origin_dir(ns)
        body = ORIGIN_BODY.format(
            direct_port=self.direct_port, up_port=self.up_port, pool=self.pool.root, prefix=prefix,
            up_rate=UPSTREAM_RATE,
        )
        proc = self.start_nginx(
            "origin-ns" if ns else "origin", prefix, body, ns, nopush=self.args.origin_nopush
        )
        wait_ready(proc, self.direct_port, "/" + self.pool.small[0], ns, True, 15)
        wait_ready(proc, self.up_port, "/", ns, False, 15)
        self.origins[ns] = proc
        return proc

    def origin_dir(self, ns: str | None) -> Path:
        return self.tmp / ("origin" if ns is None else f"origin-{ns}")

    def upstream_log(self, ns: str | None) -> Path:
        return self.origin_dir(ns) / "upstream.log"

    def upstream_entries(self, ns: str | None) -> list[UpstreamHit]:
        try:
            lines = self.upstream_log(ns).read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) >= 4:
                out.append(UpstreamHit(parts[0], int(parts[1]), int(parts[2]), float(parts[3])))
        return out

    def settled_upstream(self, ns: str | None) -> list[UpstreamHit]:
        """Upstream log entries once no new line has appeared for 0.5 s."""
        prev = -1
        entries = self.upstream_entries(ns)
        end = time.monotonic() + 10
        while len(entries) != prev and time.monotonic() < end:
            prev = len(entries)
            time.sleep(0.5)
            entries = self.upstream_entries(ns)
        return entries

    # -- generic nginx

    def start_nginx(
        self, name: str, prefix: Path, body: str, ns: str | None, nopush: str = "on"
    ) -> Proc:
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_COMMON.format(prefix=prefix, body=body, nopush=nopush))
        argv = ["nginx", "-e", str(prefix / "error.log"), "-c", str(conf), "-p", f"{prefix}/"]
        self.pm.run(f"{name}-configtest", [*argv, "-t", "-q"], timeout=30)
        return self.pm.spawn(name, [*argv, "-g", "daemon off;"], ns=ns)

    # -- targets

    def start_target(self, name: str, ns: str | None, state: Path, port: int) -> Running:
        """Start `name` with its cache/data under `state` (reused if it exists)."""
        tag = f"{name}{'-ns' if ns else ''}"
        origin_hostport = f"127.0.0.1:{self.up_port}"
        if name == "nginx-direct":
            return Running(name, self.origins[ns], self.direct_port, "", ns, owned=False)
        if name == "nginx-cache":
            prefix = state / ("nginx-ns" if ns else "nginx")
            body = NGINX_CACHE_BODY.format(cache=state / "cache", up_port=self.up_port, port=port)
            proc = self.start_nginx(tag, prefix, body, ns)
            self.ready_or_stop(proc, port, ns, want_200=False, timeout=15)
            return Running(name, proc, port, "", ns)
        if name == "apt-cacher-ng":
            confdir = state / ("conf-ns" if ns else "conf")
            run = state / ("run-ns" if ns else "run")
            logdir = state / ("log-ns" if ns else "log")
            for d in (confdir, run, logdir, state / "cache"):
                d.mkdir(parents=True, exist_ok=True)
            (confdir / "acng.conf").write_text(
                ACNG_CONF.format(
                    cache=state / "cache", logdir=logdir, port=port, state=run, up_port=self.up_port
                )
            )
            argv = [
                "apt-cacher-ng", "-c", str(confdir), "ForeGround=1", f"Port={port}",
                f"CacheDir={state / 'cache'}", f"LogDir={logdir}",
            ]
            proc = self.pm.spawn(tag, argv, ns=ns)
            try:
                self.ready_or_stop(proc, port, ns, want_200=False, timeout=15)
            except SkipTarget as e:
                raise BenchError(str(e)) from None
            return Running(name, proc, port, "/" + origin_hostport, ns)
        if name == "pkgdepot":
            if not self.pkgdepot_bin.exists():
                raise SkipTarget(f"{self.pkgdepot_bin} does not exist")
            data = state / "data"
            data.mkdir(parents=True, exist_ok=True)
            cfg = state / "pkgdepot.toml"
            cfg.write_text(f"[server]\nworkers = {self.args.pkgdepot_workers}\n"
                           '[upstream]\nallow_networks = ["127.0.0.0/8"]\n')
            argv = [
                str(self.pkgdepot_bin), "serve", "--listen", f"127.0.0.1:{port}",
                "--data-dir", str(data), "--config", str(cfg),
            ]
            proc = self.pm.spawn(tag, argv, ns=ns)
            self.ready_or_stop(proc, port, ns, want_200=True, timeout=30)
            return Running(name, proc, port, "/" + origin_hostport, ns)
        raise ValueError(name)

    def ready_or_stop(
        self, proc: Proc, port: int, ns: str | None, want_200: bool, timeout: float
    ) -> None:
        try:
            wait_ready(proc, port, "/", ns, want_200, timeout)
        except BaseException:
            self.pm.stop(proc)
            raise

    def stop_target(self, r: Running) -> None:
        if r.owned:
            self.pm.stop(r.proc)

    # -- measurements

    def wrk(
        self,
        r: Running,
        paths: Sequence[str],
        connections: int,
        duration: float,
        label: str,
        timeout_s: int = 10,
    ) -> dict[str, Any]:
        listfile = self.tmp / f"paths-{r.name}-{label}.txt"
        listfile.write_text("".join(r.path(p) + "\n" for p in paths))
        threads = min(2, connections)
        argv = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:.0f}s",
            f"--timeout={timeout_s}s", "--latency", "-s", str(self.tmp / "rotate.lua"),
            f"http://127.0.0.1:{r.port}/", "--", str(listfile), str(threads),
        ]
        cpu0 = CpuSnapshot.take(r.proc.pid)
        out = self.pm.run(f"wrk-{r.name}-{label}", argv, timeout=duration + 60, ns=r.ns)
        cpu = CpuSnapshot.take(r.proc.pid).since(cpu0)
        for line in out.splitlines():
            if line.startswith("BENCHJSON "):
                res: dict[str, Any] = json.loads(line[len("BENCHJSON ") :])
                secs = res["duration_us"] / 1e6
                res["rps"] = res["requests"] / secs
                res["mb_per_s"] = res["bytes"] / secs / 1e6
                res["p99_ms"] = res["lat_p99_us"] / 1000
                res["p50_ms"] = res["lat_p50_us"] / 1000
                res["errors"] = sum(v for k, v in res.items() if k.startswith("err_"))
                res["cpu"] = cpu
                if res["requests"]:
                    res["server_cpu_us_per_req"] = cpu["server_s"] * 1e6 / res["requests"]
                return res
        raise BenchError(f"no result line from wrk:\n{out[-2000:]}")

    def wrk_reps(
        self, r: Running, paths: Sequence[str], connections: int, label: str, key: str,
        timeout_s: int = 10,
    ) -> dict[str, Any]:
        """self.reps runs of wrk; the one with the median `key` stands, all are kept."""
        runs = [
            self.wrk(r, paths, connections, self.dur, f"{label}-{i}", timeout_s)
            for i in range(self.reps)
        ]
        ranked = sorted(runs, key=lambda w: float(w[key]))
        best = dict(ranked[(len(ranked) - 1) // 2])
        if len(runs) > 1:
            best["runs"] = [
                {k: w[k] for k in ("rps", "mb_per_s", "p99_ms", "errors")} for w in runs
            ]
        others = [w["cpu"]["other_pct"] + w["cpu"]["steal_pct"] for w in runs]
        self.noise[r.name] = max(self.noise.get(r.name, 0.0), *others)
        if max(others) > 15:
            log(f"  note: other processes (or steal) took up to {max(others):.0f}% of the "
                f"machine's CPU during {r.name} {label}: numbers are noisy")
        return best

    def warm(self, r: Running, full: bool = True) -> dict[str, Any]:
        """Fetch every hot file once through r (if full), then check that a
        re-fetch of a sample is served from cache with the right content."""
        pool = self.pool
        out: dict[str, Any] = {}
        if full:
            hot = [pool.big, *pool.small, *pool.medium]
            res = fetch_many(
                r.port, [r.path(p) for p in hot], [pool.sizes[p] for p in hot], 16, ns=r.ns
            )
            if res.failures:
                raise BenchError(f"warm-up through {r.name}: {len(res.failures)} failures, "
                                 f"e.g. {res.failures[:3]}")
            out.update({"warm_s": res.seconds, "warm_retries": res.retries})
        before = len(self.settled_upstream(r.ns))
        check = [pool.big, *pool.small[:100], *pool.medium[:100]]
        hashed = frozenset(r.path(p) for p in pool.sha256)
        again = fetch_many(
            r.port, [r.path(p) for p in check], [pool.sizes[p] for p in check], 8,
            ns=r.ns, hash_paths=hashed,
        )
        if again.failures:
            raise BenchError(f"re-fetch through {r.name}: {again.failures[:3]}")
        bad = [p for p in pool.sha256 if again.hashes.get(r.path(p), pool.sha256[p])
               != pool.sha256[p]]
        if bad:
            raise BenchError(f"{r.name} served wrong content for {bad[:3]}")
        after = len(self.settled_upstream(r.ns))
        out.update({"refetch_upstream_requests": after - before, "refetch_retries": again.retries})
        if r.name != BASELINE:
            out["hits_verified"] = after == before
            if after != before:
                raise BenchError(
                    f"{r.name}: re-fetching {len(check)} warm files made {after - before} "
                    "upstream requests: not served from cache"
                )
        return out

    def idle_connections(self, r: Running, n: int, hold: float) -> dict[str, Any]:
        path = r.path(self.pool.small[0])
        sampler = MemSampler(r.proc.pid)
        base = tree_memory_kb(r.proc.pid)

        async def main() -> dict[str, Any]:
            sem = asyncio.Semaphore(64)
            req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\n\r\n".encode()

            async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                async with sem:
                    rd, wr = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", r.port), 5
                    )
                    wr.write(req)
                    await wr.drain()
                    try:
                        head = await asyncio.wait_for(rd.readuntil(b"\r\n\r\n"), 5)
                    except BaseException:
                        wr.close()
                        raise
                    lines = head.decode("latin-1").split("\r\n")
                    if " 200 " not in lines[0] + " ":
                        wr.close()
                        raise BenchError(lines[0])
                    hdrs = {k.strip().lower(): v.strip() for k, _, v in
                            (ln.partition(":") for ln in lines[1:] if ln)}
                    if "content-length" in hdrs:
                        await asyncio.wait_for(rd.readexactly(int(hdrs["content-length"])), 5)
                    elif "chunked" in hdrs.get("transfer-encoding", ""):
                        await asyncio.wait_for(rd.readuntil(b"0\r\n\r\n"), 5)
                    return rd, wr

            tasks = [asyncio.ensure_future(one()) for _ in range(n)]
            # Bounded: whatever has not been answered after 10 s counts as failed.
            done, pending = await asyncio.wait(tasks, timeout=10)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            conns = [t.result() for t in done if t.exception() is None]
            errs = [repr(t.exception()) for t in done if t.exception() is not None]
            errs += ["not answered within 10 s"] * len(pending)
            t_end = time.monotonic() + hold
            while time.monotonic() < t_end:
                sampler.sample()
                await asyncio.sleep(0.5)
            sampler.sample()
            alive = sum(1 for rd, wr in conns if not rd.at_eof() and not wr.is_closing())
            for _, wr in conns:
                wr.close()
            await asyncio.sleep(0.2)
            return {"opened": len(conns), "open_after_hold": alive, "failed": len(errs),
                    "errors": sorted(set(errs))[:5]}

        out = asyncio.run(main())
        out.update({f"with_{n}_{k}": v for k, v in sampler.summary().items()})
        out["before_rss_mb"] = base[0] / 1024
        out["before_pss_mb"] = base[1] / 1024
        if sampler.rss:
            out["kb_per_conn"] = (max(sampler.rss) - base[0]) / n
        return out

    def curl_fetch(self, port: int, path: str, clients: int) -> dict[str, Any]:
        """`clients` curl processes GET the same URL at once; `seconds` is when
        the last was done, by curl's own clock (time_total).

        The clients are started first and wait for their URL on stdin (curl
        -K -), then are released at once: started one after another on the
        clock, 16 curl processes added about 50 ms (3 ms each) to the
        stampede, against one start for the plain fetch; and the wall time
        of this script collecting and reaping 16 processes added 5-20 ms more."""
        url = f"http://127.0.0.1:{port}{path}"
        argv = [
            "curl", "-s", "-o", "/dev/null", "--noproxy", "*", "--max-time", "300",
            "-w", "%{http_code} %{size_download} %{time_total}\n", "-K", "-",
        ]
        procs = [self.pm.spawn(f"curl{i}", argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE)
                 for i in range(clients)]
        ready = wait_reading_stdin([p.pid for p in procs], 10.0)
        t0 = time.monotonic()
        for p in procs:
            assert p.popen.stdin is not None
            p.popen.stdin.write(f'url = "{url}"\n'.encode())
            p.popen.stdin.close()
            p.popen.stdin = None
        outs = []
        try:
            for p in procs:
                out, _ = p.popen.communicate(timeout=max(5.0, 320 - (time.monotonic() - t0)))
                outs.append(out.decode().split())
                p.stopped = True
                p._log.close()
            wall = time.monotonic() - t0
        finally:
            for p in procs:
                self.pm.stop(p)
        bad = [o for o in outs if len(o) != 3 or o[0] != "200" or int(o[1]) != BIG_SIZE]
        if bad:
            raise BenchError(f"{len(bad)} of {clients} downloads of {path} failed: {bad[:3]}")
        return {"seconds": max(float(o[2]) for o in outs), "wall_seconds": wall,
                "clients_ready_before_start": ready}

    def plain_fetch(self) -> list[float]:
        """Three curl GETs of the 100 MB file straight from the (rate-limited)
        upstream that the caches use, in seconds, sorted.

        Measured right before each stampede, so that both see the same
        machine (other load varies a lot over a run). The stampede is compared
        with their median: nginx's limit_rate counts whole seconds of the
        clock, so one rate-limited transfer of the file takes 0.95-1.05 s
        depending on when it starts; the best of three is a lucky one."""
        return sorted(
            self.curl_fetch(self.up_port, "/" + self.pool.big, 1)["seconds"] for _ in range(3)
        )

    # -- per target

    def run_target(self, name: str, tests: set[str], res: dict[str, Any]) -> None:
        """Measure `name`, filling res as it goes (what was measured survives a failure)."""
        m, det = res["metrics"], res["details"]
        state = self.tmp / "state" / name
        port = free_port() if name != BASELINE else self.direct_port
        hot_needed = bool(tests & {"hit", "rps", "memory"})

        if hot_needed:
            r = self.start_target(name, None, state, port)
            try:
                log(f"{name}: warming {1 + 2 * len(self.pool.small)} files")
                det["warm"] = self.warm(r)
                if name != BASELINE:
                    log(f"{name}: warm in {det['warm']['warm_s']:.1f}s, re-fetch served "
                        "from cache (no upstream request)")
                if "hit" in tests:
                    w = self.wrk_reps(
                        r, [self.pool.big], HIT_CLIENTS, "100m", "mb_per_s", timeout_s=120
                    )
                    det["hit_100m"] = w
                    m["hit_100m_MBps"] = w["mb_per_s"]
                    self.note_errors(res, "hit_100m", w)
                    log(f"{name}: 100 MB hits, {HIT_CLIENTS} clients: {w['mb_per_s']:.0f} MB/s")
                    if name != BASELINE:
                        # nginx-direct again, right after: the machine's speed
                        # drifts over a run, by more than the targets' margins
                        base = self.start_target(BASELINE, None, state, self.direct_port)
                        wd = self.wrk_reps(base, [self.pool.big], HIT_CLIENTS, "100m-direct",
                                           "mb_per_s", timeout_s=120)
                        det["hit_100m_direct_after"] = wd
                        m["hit_100m_x_direct_after"] = w["mb_per_s"] / wd["mb_per_s"]
                        log(f"{name}: nginx-direct right after: {wd['mb_per_s']:.0f} MB/s "
                            f"({m['hit_100m_x_direct_after']:.2f}x)")
                if "rps" in tests or "memory" in tests:
                    self.rps_pair(r, res, "loopback", sample_mem=True)
                if "memory" in tests:
                    time.sleep(1)
                    idle = self.idle_connections(r, IDLE_CONNECTIONS, IDLE_HOLD_S)
                    det["idle_connections"] = idle
                    m["rss_idle_mb"] = idle["before_rss_mb"]
                    if f"with_{IDLE_CONNECTIONS}_rss_max_mb" in idle:
                        m["rss_1000_idle_mb"] = idle[f"with_{IDLE_CONNECTIONS}_rss_max_mb"]
                    m["idle_conns_open_after_hold"] = idle["open_after_hold"]
                    log(f"{name}: {idle['opened']} idle connections, "
                        f"{idle['open_after_hold']} still open after {IDLE_HOLD_S:.0f}s, "
                        f"RSS {idle['before_rss_mb']:.1f} -> "
                        f"{m.get('rss_1000_idle_mb', float('nan')):.1f} MB")
            finally:
                self.stop_target(r)

            if "rps" in tests:
                if self.ns_name is None:
                    res["notes"].append(f"MSS {MSS} variant skipped: {self.ns_reason}")
                else:
                    r = self.start_target(name, self.ns_name, state, port)
                    try:
                        # Same cache/data dir as before: check that it is still warm.
                        try:
                            det["warm_ns"] = self.warm(r, full=False)
                        except BenchError as e:
                            res["notes"].append(f"not warm after restart in the netns ({e})")
                            det["warm_ns"] = self.warm(r, full=True)
                        self.rps_pair(r, res, "mss1460", sample_mem=False)
                    finally:
                        self.stop_target(r)

        if tests & {"stampede", "cold"}:
            fresh = self.tmp / "state" / f"{name}-fresh"
            r = self.start_target(name, None, fresh, free_port() if name != BASELINE else port)
            try:
                if "stampede" in tests:
                    self.stampede(r, res)
                if "cold" in tests:
                    before = len(self.settled_upstream(None))
                    cold = fetch_many(
                        r.port, [r.path(p) for p in self.pool.cold],
                        [SMALL_SIZE] * len(self.pool.cold), COLD_CLIENTS,
                    )
                    if cold.failures:
                        raise BenchError(f"cold misses: {cold.failures[:3]}")
                    upstream = len(self.settled_upstream(None)) - before
                    m["cold_500_s"] = cold.seconds
                    det["cold_500"] = {"seconds": cold.seconds, "upstream_requests": upstream}
                    log(f"{name}: {N_COLD} cold 4 KB misses, {COLD_CLIENTS} clients: "
                        f"{cold.seconds:.2f}s ({upstream} upstream requests)")
            finally:
                self.stop_target(r)

    def rps_pair(self, r: Running, res: dict[str, Any], variant: str, sample_mem: bool) -> None:
        m, det = res["metrics"], res["details"]
        # Short unrecorded run: opens the connections, settles caches and workers.
        self.wrk(r, self.pool.small, RPS_CONNECTIONS, 1, f"{variant}-warmup")
        for label, paths in (("4k", self.pool.small), ("64k", self.pool.medium)):
            key = f"{variant}_{label}"
            if sample_mem:
                with MemSampler(r.proc.pid) as ms:
                    w = self.wrk_reps(r, paths, RPS_CONNECTIONS, key, "rps")
                w["memory"] = ms.summary()
                if label == "4k" and ms.rss:
                    m["rss_64conn_mb"] = max(ms.rss) / 1024
            else:
                w = self.wrk_reps(r, paths, RPS_CONNECTIONS, key, "rps")
            det[key] = w
            m[f"{key}_rps"] = w["rps"]
            m[f"{key}_p99_ms"] = w["p99_ms"]
            if "server_cpu_us_per_req" in w:
                m[f"{key}_cpu_us"] = w["server_cpu_us_per_req"]
            self.note_errors(res, key, w)
            log(f"{r.name} [{variant}] {label}: {w['rps']:.0f} req/s, "
                f"p99 {w['p99_ms']:.2f} ms, {w['errors']} errors")

    def stampede(self, r: Running, res: dict[str, Any]) -> None:
        m, det = res["metrics"], res["details"]
        plains = self.plain_fetch()
        plain = statistics.median(plains)
        self.meta.setdefault("plain_fetch_100m_s", {})[r.name] = plains
        before = self.settled_upstream(None)
        out = self.curl_fetch(r.port, r.path(self.pool.big), STAMPEDE_CLIENTS)
        after = self.settled_upstream(None)
        big = "/" + self.pool.big
        new = [h for h in after[len(before):] if h.uri == big]
        d: dict[str, Any] = {**out, "plain_fetch_s": plain, "plain_fetches_s": plains}
        m["stampede_time_x_plain"] = out["seconds"] / plain
        m["stampede_s"] = out["seconds"]
        if r.name == BASELINE:
            d["note"] = "clients fetch from the origin itself: 16x by definition"
            m["stampede_upstream_x"] = float(STAMPEDE_CLIENTS)
        else:
            d.update({
                "upstream_bytes": sum(h.bytes for h in new),
                "upstream_requests": len(new),
                "upstream_status_bytes": [[h.status, h.bytes] for h in new],
                "upstream_seconds": [h.seconds for h in new],
            })
            m["stampede_upstream_x"] = d["upstream_bytes"] / BIG_SIZE
            if len(new) == 1:
                # what the cache itself adds: the last client done after the
                # one upstream transfer (which varies like a plain fetch)
                d["after_upstream_s"] = out["seconds"] - new[0].seconds
                m["stampede_after_upstream_ms"] = d["after_upstream_s"] * 1000
        det["stampede"] = d
        log(f"{r.name}: {STAMPEDE_CLIENTS} clients on a cold 100 MB file: "
            f"{out['seconds']:.2f}s ({m['stampede_time_x_plain']:.1f}x a plain fetch), "
            f"origin sent {m['stampede_upstream_x']:.2f}x the file"
            + (f", last client done {d['after_upstream_s'] * 1000:.0f} ms after it"
               if "after_upstream_s" in d else ""))

    @staticmethod
    def note_errors(res: dict[str, Any], key: str, w: dict[str, Any]) -> None:
        if w["errors"]:
            errs = {k[4:]: v for k, v in w.items() if k.startswith("err_") and v}
            res["notes"].append(f"{key}: wrk errors {errs}")


# --------------------------------------------------------------------------- wrk script

ROTATE_LUA = r"""
-- Rotates over the paths in the file given as the first script argument.
-- Each wrk thread starts at its own offset; done() prints one JSON line.
local paths = {}
local idx = 0
local nthreads_seen = 0

function setup(thread)
  thread:set("tid", nthreads_seen)
  nthreads_seen = nthreads_seen + 1
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  local nthreads = tonumber(args[2]) or 1
  idx = math.floor((tid or 0) * #paths / nthreads)
end

function request()
  idx = idx % #paths + 1
  return wrk.format("GET", paths[idx])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%.0f,"bytes":%.0f,"duration_us":%.0f,' ..
    '"err_connect":%.0f,"err_read":%.0f,"err_write":%.0f,"err_status":%.0f,"err_timeout":%.0f,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%.0f,"lat_p90_us":%.0f,"lat_p99_us":%.0f,"lat_max_us":%.0f}\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
"""


# --------------------------------------------------------------------------- report

ROWS: list[tuple[str, str, str]] = [
    # (metric key, label, better)
    ("hit_100m_MBps", "100 MB hit, 8 clients (MB/s)", "higher"),
    ("hit_100m_x_direct_after",
     "100 MB hit, 8 clients (x nginx-direct measured right after)", "higher"),
    ("loopback_4k_rps", "4 KB, 64 conns, loopback (req/s)", "higher"),
    ("loopback_4k_p99_ms", "4 KB, 64 conns, loopback: p99 (ms)", "lower"),
    ("loopback_4k_cpu_us", "4 KB, 64 conns, loopback: server CPU/req (us)", "lower"),
    ("loopback_64k_rps", "64 KB, 64 conns, loopback (req/s)", "higher"),
    ("loopback_64k_p99_ms", "64 KB, 64 conns, loopback: p99 (ms)", "lower"),
    ("mss1460_4k_rps", "4 KB, 64 conns, MSS 1460 (req/s)", "higher"),
    ("mss1460_4k_p99_ms", "4 KB, 64 conns, MSS 1460: p99 (ms)", "lower"),
    ("mss1460_4k_cpu_us", "4 KB, 64 conns, MSS 1460: server CPU/req (us)", "lower"),
    ("mss1460_64k_rps", "64 KB, 64 conns, MSS 1460 (req/s)", "higher"),
    ("mss1460_64k_p99_ms", "64 KB, 64 conns, MSS 1460: p99 (ms)", "lower"),
    ("stampede_upstream_x", "16 cold clients, 100 MB: origin bytes (x file)", "lower"),
    ("stampede_time_x_plain", "16 cold clients, 100 MB: last done (x plain fetch)", "lower"),
    ("stampede_s", "16 cold clients, 100 MB: last done (s)", "lower"),
    ("stampede_after_upstream_ms",
     "16 cold clients, 100 MB: last done after its upstream transfer (ms)", "lower"),
    ("cold_500_s", "500 cold 4 KB misses, 16 clients (s)", "lower"),
    ("rss_64conn_mb", "RSS during 64-conn 4 KB test (MB)", "lower"),
    ("rss_idle_mb", "RSS idle, warm (MB)", "lower"),
    ("rss_1000_idle_mb", "RSS with 1000 idle keep-alive conns (MB)", "lower"),
    ("idle_conns_open_after_hold", "idle conns still open after 5 s", "higher"),
    ("other_cpu_pct_max", "CPU taken by other processes during load tests (max %)", "noise"),
]
# Metrics that are already ratios (to the file size, to a plain fetch), or counts.
NO_RATIO = {
    "stampede_upstream_x", "stampede_time_x_plain", "idle_conns_open_after_hold",
    "other_cpu_pct_max", "stampede_after_upstream_ms", "hit_100m_x_direct_after",
}


def add_ratios(results: dict[str, dict[str, Any]]) -> None:
    base = results.get(BASELINE, {}).get("metrics", {})
    for res in results.values():
        ratios = {}
        for k, v in res.get("metrics", {}).items():
            if k in NO_RATIO or not base.get(k):
                continue
            ratios[k] = v / base[k]
        res["ratio_to_nginx_direct"] = ratios


def fmt(v: float) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def markdown(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    names = list(results)
    lines = [
        f"pkgdepot cache bench: nproc {meta['nproc']}, {meta['mode']} run, "
        f"{meta['reps']} x {meta['durations_s']['rps']} s per load test (median); "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
        "| metric | better | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for key, label, better in ROWS:
        if not any(key in results[n].get("metrics", {}) for n in names):
            continue
        cells = []
        for n in names:
            res = results[n]
            v = res["metrics"].get(key)
            if v is None:
                cells.append(res["status"] if res["status"] != "ok" else "-")
                continue
            ratio = res.get("ratio_to_nginx_direct", {}).get(key)
            if ratio is not None and n != BASELINE:
                cells.append(f"{fmt(v)} ({ratio:.2f}x)")
            else:
                cells.append(fmt(v))
        lines.append(f"| {label} | {better} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("(x) = ratio to nginx-direct.")
    if "plain_fetch_100m_s" in meta:
        ms = [v * 1000 for vs in meta["plain_fetch_100m_s"].values() for v in vs]
        lines[-1] += (" The '16 cold clients' rows in (x file) and (x plain fetch) are "
                      "already ratios: to the file size and to one plain fetch of it from "
                      "the origin, measured just before (median of 3; all took "
                      f"{min(ms):.0f}-{max(ms):.0f} ms).")
    for n in names:
        res = results[n]
        if res["status"] != "ok":
            lines.append(f"- {n}: {res['status']}: {res.get('reason', '')}".rstrip())
        for note in res.get("notes", []):
            lines.append(f"- {n}: {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def versions(pkgdepot_bin: Path) -> dict[str, str]:
    def cmd(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return "not installed"
        return (r.stdout + r.stderr).strip().splitlines()[0] if r.stdout + r.stderr else "?"

    def deb(pkg: str) -> str:
        return cmd(["dpkg-query", "-W", "-f=${Version}", pkg])

    out = {
        "nginx": cmd(["nginx", "-v"]).replace("nginx version: ", ""),
        "apt-cacher-ng": deb("apt-cacher-ng"),
        "wrk": deb("wrk"),
    }
    try:
        out["pkgdepot"] = importlib.metadata.version("pkgdepot")
    except importlib.metadata.PackageNotFoundError:
        out["pkgdepot"] = "not installed" if not pkgdepot_bin.exists() else "?"
    return out


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "mem_total_mb": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s load tests (whole run ~2-3 min)")
    ap.add_argument(
        "--only", action="append", default=[], metavar="NAME",
        help=f"targets {TARGETS} and/or tests {TESTS}; repeat or comma-separate. "
             "nginx-direct always runs (it is the baseline).",
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "cache.json"))
    ap.add_argument("--reps", type=int, default=0,
                    help="runs of each load test, median kept (default 1 quick, 3 full)")
    ap.add_argument(
        "--origin-nopush", choices=("on", "off"), default="on",
        help="tcp_nopush of the origin/nginx-direct (default on; off is 2-3x faster on 4 KB "
             "files with MSS 1460, see README)",
    )
    ap.add_argument("--n", type=int, default=2000, help="files of 4 KB and of 64 KB (2000)")
    ap.add_argument("--pkgdepot", default=str(REPO / ".venv" / "bin" / "pkgdepot"),
                    help="pkgdepot command (default .venv/bin/pkgdepot)")
    ap.add_argument("--pkgdepot-workers", type=int, default=0,
                    help="pkgdepot server.workers (default 0, pkgdepot's own default: "
                         "2 processes on 2 or more CPUs)")
    ap.add_argument("--tmpdir", default=None, help="parent of the temp dir (default $TMPDIR)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, configs)")
    return ap.parse_args(argv)


def selection(only: list[str]) -> tuple[list[str], set[str]]:
    names = [x.strip() for o in only for x in o.split(",") if x.strip()]
    bad = [x for x in names if x not in TARGETS and x not in TESTS]
    if bad:
        raise SystemExit(f"--only: unknown {bad}; targets {TARGETS}, tests {TESTS}")
    targets = [t for t in TARGETS if t in names] or list(TARGETS)
    if BASELINE not in targets:
        targets.insert(0, BASELINE)
    tests = {t for t in TESTS if t in names} or set(TESTS)
    return targets, tests


def check_tools() -> None:
    missing = [t for t in ("nginx", "apt-cacher-ng", "wrk", "curl", "ip") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"missing {missing}: run `sh bench/setup.sh` (as root) first")


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler of its own.
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    targets, tests = selection(args.only)
    check_tools()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="pkgdepot-bench-", dir=args.tmpdir))
    tmp.chmod(0o755)  # nginx workers run as nobody
    (tmp / "logs").mkdir()
    bench = Bench(args, tmp)
    results: dict[str, dict[str, Any]] = {}
    exit_code = 0
    with signals_as_interrupt():
        try:
            log(f"temp dir {tmp}; targets {targets}; tests {sorted(tests)}")
            (tmp / "rotate.lua").write_text(ROTATE_LUA)
            t0 = time.monotonic()
            bench.pool = make_pool(tmp / "pool", args.n)
            log(f"pool: 1 x 100 MB, {args.n} x 4 KB, {args.n} x 64 KB, {N_COLD} x 4 KB cold "
                f"({time.monotonic() - t0:.1f}s)")
            bench.meta.update(machine())
            bench.meta["versions"] = versions(bench.pkgdepot_bin)
            bench.meta["mode"] = "quick" if args.quick else "full"
            bench.meta["durations_s"] = {"hit": bench.dur, "rps": bench.dur,
                                         "idle_hold": IDLE_HOLD_S}
            bench.meta["reps"] = bench.reps
            bench.meta["origin_tcp_nopush"] = args.origin_nopush
            bench.meta["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
            bench.meta["n_files"] = args.n
            bench.start_origin(None)
            bench.meta["mss_loopback"] = measured_mss(bench.direct_port, None)
            if "rps" in tests:
                if os.geteuid() != 0:
                    bench.ns_reason = "needs root for ip netns"
                else:
                    ns = NetNs(f"pkgdepot-bench-{os.getpid()}")
                    bench.netns = ns
                    try:
                        ns.create()
                        bench.ns_name = ns.name
                        bench.start_origin(ns.name)
                        bench.meta["mss_netns"] = measured_mss(bench.direct_port, ns.name)
                        log(f"netns {ns.name}: MSS {bench.meta['mss_netns']} "
                            f"(loopback outside: {bench.meta['mss_loopback']})")
                    except (subprocess.CalledProcessError, OSError, SkipTarget) as e:
                        bench.ns_name = None
                        bench.ns_reason = f"netns set-up failed: {e}"
                        log(bench.ns_reason)
            for name in targets:
                log(f"=== {name}")
                res: dict[str, Any] = {"status": "ok", "metrics": {}, "details": {}, "notes": []}
                results[name] = res
                try:
                    bench.run_target(name, tests, res)
                except SkipTarget as e:
                    log(f"{name}: SKIPPED: {e}")
                    res.update({"status": "skipped", "reason": str(e)})
                except Exception as e:  # one target failing must not lose the others
                    log(f"{name}: FAILED: {type(e).__name__}: {e}")
                    res.update({"status": "failed", "reason": str(e),
                                "traceback": traceback.format_exc()})
                    exit_code = 1
                if name in bench.noise:
                    res["metrics"]["other_cpu_pct_max"] = round(bench.noise[name], 1)
            bench.meta["wall_s"] = time.monotonic() - t_start
            bench.meta["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
            add_ratios(results)
            report = {"meta": bench.meta, "results": results}
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
            print(markdown(results, bench.meta))
            log(f"wrote {out} ({bench.meta['wall_s']:.0f}s)")
        except KeyboardInterrupt:
            log("interrupted: cleaning up")
            exit_code = 130
        except Exception as e:
            log(f"FAILED: {type(e).__name__}: {e}\n{traceback.format_exc()}")
            exit_code = 1
        finally:
            bench.pm.stop_all()
            if bench.netns is not None:
                bench.netns.delete()
            if args.keep_tmp:
                log(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
