#!/usr/bin/env python3
"""Mirror and snapshot benchmark: pkgdepot against aptly, on one loopback origin.

Run as root from the repository root:

    .venv/bin/python bench/mirror_bench.py --setup     # once: apt-get install aptly (+ tools)
    .venv/bin/python bench/mirror_bench.py [--quick] [--out bench/results/mirror.json]

One nginx on 127.0.0.1 serves two generated, signed apt repositories: a real
one (N small .debs built with dpkg-deb) that both tools mirror in full, then
incrementally, then unchanged; and a synthetic one (a 60,000-stanza index with
tiny placeholder files) whose states pkgdepot records as cache-only snapshots
and aptly as `snapshot create ... from mirror`. Every request to the origin is
logged, and that log is how fetched packages and bytes are counted. See
bench/MIRROR.md for what each number means.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.keys import GpgKey, kill_gpg_agents, make_gpg_key  # noqa: E402
from tests.support.repos import DebSpec, build_apt_repo, set_build_cache_dir  # noqa: E402

SETUP_PACKAGES = ("aptly", "nginx", "dpkg-dev", "apt-utils", "gnupg", "xz-utils", "faketime")
#: how much faster than real time the server's clock runs while the bench makes
#: many snapshots (one state per second of the server's clock)
FAST_CLOCK = 100
SUITE = "stable"
PACKAGES_DIR = "main/binary-amd64"
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A step failed in a way that makes its numbers meaningless."""


@dataclass(frozen=True)
class Params:
    quick: bool
    packages: int           # packages in the mirrored repository
    padding: int            # incompressible bytes in each of them
    index_packages: int     # stanzas of the synthetic index
    snapshots: int          # small-change snapshots to reach on top of the two big states
    snapshot_budget: float  # seconds at most for making them
    aptly_snapshots: int    # extra `aptly snapshot create` runs on the big mirror
    resolve_requests: int   # GETs of /snapshot/deb/<time>/... per measurement
    changed_percent: float = 1.0
    concurrency: int = 8
    repeats: int = 5        # alternating runs of each 3,000-package sync (median reported)
    xz_preset: int = 6


FULL = Params(False, 3000, 3000, 60000, 1000, 300.0, 20, 200)
QUICK = Params(True, 500, 3000, 10000, 100, 30.0, 5, 50)


# --------------------------------------------------------------------------- processes


def child_env(**extra: str) -> dict[str, str]:
    """Environment for every child: no proxy settings, C locale."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    # as installed, Python keeps its bytecode caches: a shell that forbids
    # writing them would have every pkgdepot start compile its modules anew
    # (30 ms a command here, when a source file is newer than its cache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["LC_ALL"] = "C"
    env.update(extra)
    return env


class Ran(NamedTuple):
    seconds: float
    stdout: str
    stderr: str
    cpu: float  # user + system seconds of the command and the children it waited for


def run(cmd: Sequence[str | Path], *, timeout: float = 600.0, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> Ran:
    """Run a command to completion (bounded), timed; BenchError when it fails."""
    argv = [str(c) for c in cmd]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=cwd,
                              env=env or child_env(), stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{' '.join(argv)}: no result after {timeout:.0f} s") from e
    seconds = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    out = proc.stdout.decode(errors="replace")
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({proc.returncode}):\n{out[-2000:]}\n"
                         f"{err[-2000:]}")
    return Ran(seconds, out, err, cpu)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, with reaped children) of a running process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2:].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class Proc:
    """A long-running child in its own process group, stopped by its pid."""

    def __init__(self, name: str, argv: Sequence[str | Path], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=env or child_env())
        self.pid = self.popen.pid
        self.stopped = False

    def alive(self) -> bool:
        return not self.stopped and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.stopped:
            return
        # The leader is only reaped by wait() below, so its pid (= the group id)
        # cannot be reused by another process while we signal the group.
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(wait)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # anything the leader left in its group
        self.stopped = True
        self._log.close()

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Procs:
    def __init__(self) -> None:
        self.all: list[Proc] = []

    def start(self, name: str, argv: Sequence[str | Path], log_path: Path,
              env: dict[str, str] | None = None) -> Proc:
        p = Proc(name, argv, log_path, env)
        self.all.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.all):
            with contextlib.suppress(Exception):
                p.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: Proc, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited at start:\n{proc.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise BenchError(f"{proc.name} does not listen on {port} after {timeout:.0f} s")


# --------------------------------------------------------------------------- HTTP

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Got(NamedTuple):
    seconds: float
    status: int
    body: bytes
    headers: dict[str, str]


def http(url: str, method: str = "GET", timeout: float = 120.0) -> Got:
    req = urllib.request.Request(url, method=method)
    t0 = time.monotonic()
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            body = r.read()
            return Got(time.monotonic() - t0, r.status, body, dict(r.headers.items()))
    except urllib.error.HTTPError as e:
        body = e.read()
        return Got(time.monotonic() - t0, e.code, body, dict(e.headers.items()))


# --------------------------------------------------------------------------- measuring


def tree_size(path: Path) -> dict[str, int]:
    """Apparent bytes, bytes on disk (du) and file count under path; a file with
    several hard links counts once, as with du."""
    apparent = disk = files = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(dirpath, n))
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                apparent += st.st_size
                disk += st.st_blocks * 512
                files += 1
    return {"apparent": apparent, "disk": disk, "files": files}


def catalog_size(data_dir: Path) -> dict[str, int]:
    """catalog.sqlite: file sizes (+ -wal) and logical size (page_count * page_size)."""
    db = data_dir / "catalog.sqlite"
    files = sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    logical = 0
    if db.exists():
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            pages = con.execute("PRAGMA page_count").fetchone()[0]
            size = con.execute("PRAGMA page_size").fetchone()[0]
            logical = int(pages) * int(size)
        finally:
            con.close()
    return {"files": files, "logical": logical}


def store_state(data_dir: Path) -> dict[str, Any]:
    return {"blobs": tree_size(data_dir / "blobs"), "catalog": catalog_size(data_dir)}


def growth(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per-key difference of two nested dicts of numbers."""
    out: dict[str, Any] = {}
    for k, v in after.items():
        if isinstance(v, dict):
            out[k] = growth(before.get(k, {}), v)
        else:
            out[k] = v - before.get(k, 0)
    return out


def pd_added(g: dict[str, Any]) -> int:
    """Bytes a pkgdepot step added: blob disk usage + logical catalog growth."""
    return int(g["blobs"]["disk"]) + int(g["catalog"]["logical"])


class Req(NamedTuple):
    method: str
    path: str
    status: int
    bytes: int


def traffic(reqs: list[Req]) -> dict[str, Any]:
    pool = [r for r in reqs if "/pool/" in r.path]
    meta = [r for r in reqs if "/pool/" not in r.path]
    return {
        "requests": len(reqs),
        "bytes": sum(r.bytes for r in reqs),
        "package_requests": len(pool),
        "package_bytes": sum(r.bytes for r in pool),
        "metadata_requests": len(meta),
        "metadata_bytes": sum(r.bytes for r in meta),
        "metadata": [f"{r.method} {r.path} {r.status} {r.bytes}" for r in meta],
        "status": dict(Counter(str(r.status) for r in reqs)),
    }


def check_once(reqs: list[Req], expected: set[str]) -> dict[str, Any]:
    """Were the expected package files each fetched once (200), and nothing else?"""
    got = Counter(r.path for r in reqs if "/pool/" in r.path and r.status == 200)
    other = [r for r in reqs if "/pool/" in r.path and r.status != 200]
    dup = {p: n for p, n in got.items() if n > 1}
    missing = expected - got.keys()
    unexpected = got.keys() - expected
    return {
        "expected": len(expected),
        "fetched_once": sum(1 for p in expected if got.get(p) == 1),
        "duplicates": len(dup),
        "duplicate_examples": sorted(dup)[:5],
        "missing": len(missing),
        "missing_examples": sorted(missing)[:5],
        "unexpected": len(unexpected),
        "unexpected_examples": sorted(unexpected)[:5],
        "non_200": len(other),
        "ok": not dup and not missing and not unexpected and not other,
    }


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, int(q * len(s)))]


def ms_stats(seconds: Sequence[float]) -> dict[str, float]:
    if not seconds:
        return {}
    return {"n": len(seconds), "median_ms": statistics.median(seconds) * 1000,
            "p95_ms": pct(seconds, 0.95) * 1000, "max_ms": max(seconds) * 1000}


def best_of(n: int, fn: Callable[[], Ran]) -> tuple[float, Ran]:
    """Median time of n runs of fn (and the last result)."""
    times: list[float] = []
    last: Ran | None = None
    for _ in range(n):
        last = fn()
        times.append(last.seconds)
    assert last is not None
    return statistics.median(times), last


# --------------------------------------------------------------------------- origin


class Origin:
    """nginx on 127.0.0.1 serving ROOT/debian and ROOT/synth, logging every request."""

    def __init__(self, root: Path, workdir: Path, procs: Procs) -> None:
        self.root = root
        self.workdir = workdir
        self.procs = procs
        self.port = 0
        self.access = workdir / "access.log"
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        self.port = free_port()
        w = self.workdir
        temps = "".join(f"  {k}_temp_path {w}/tmp;\n"
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = (
            "worker_processes 1;\n"
            f"pid {w}/nginx.pid;\n"
            f"error_log {w}/error.log;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "  log_format bench '$request_method $request_uri $status $body_bytes_sent';\n"
            f"  access_log {self.access} bench;\n"
            f"{temps}"
            "  sendfile on;\n  tcp_nodelay on;\n  keepalive_requests 100000;\n"
            "  default_type application/octet-stream;\n"
            f"  server {{\n    listen 127.0.0.1:{self.port};\n"
            f"    location /debian/ {{ alias {self.root}/debian/; }}\n"
            f"    location /synth/ {{ alias {self.root}/synth/; }}\n"
            "  }\n}\n"
        )
        (w / "nginx.conf").write_text(conf)
        self.access.touch()
        self.proc = self.procs.start(
            "nginx", ["nginx", "-e", w / "error.log", "-c", w / "nginx.conf", "-p", w,
                      "-g", "daemon off;"], w / "nginx.out")
        wait_port(self.port, self.proc)

    def mark(self) -> int:
        return self.access.stat().st_size

    def since(self, mark: int) -> list[Req]:
        time.sleep(0.05)  # nginx writes the line after the response
        with open(self.access, "rb") as f:
            f.seek(mark)
            data = f.read().decode(errors="replace")
        out = []
        for line in data.splitlines():
            parts = line.split()
            if len(parts) == 4:
                out.append(Req(parts[0], parts[1], int(parts[2]), int(parts[3])))
        return out


# --------------------------------------------------------------------------- tools


class Pkgdepot:
    def __init__(self, exe: str, data_dir: Path, config: Path) -> None:
        self.exe = exe
        self.data_dir = data_dir
        self.config = config

    def cli(self, *args: str, timeout: float = 600.0) -> Ran:
        return run([*self.exe.split(), *args, "--data-dir", str(self.data_dir),
                    "--config", str(self.config)], timeout=timeout)

    def snapshots(self) -> list[dict[str, Any]]:
        out = json.loads(self.cli("snapshot", "list", "deb", "--json").stdout)
        if isinstance(out, dict):
            out = out.get("snapshots", out.get("deb", []))
        return list(out)


class Aptly:
    """aptly with a private config (rootDir in the temp dir), HOME and GNUPGHOME."""

    def __init__(self, workdir: Path, keyring: Path, concurrency: int) -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        self.keyring = keyring
        self.home = workdir / "home"
        self.gnupg = self.home / ".gnupg"
        self.gnupg.mkdir(parents=True, mode=0o700)
        self.conf = workdir / "aptly.conf"
        self.conf.write_text(json.dumps({
            "rootDir": str(self.root),
            "downloadConcurrency": concurrency,
            "architectures": ["amd64"],
            "gpgProvider": "gpg",
            "gpgDisableSign": True,
            "gpgDisableVerify": False,
            "downloadSourcePackages": False,
            "skipContentsPublishing": True,
            "skipBz2Publishing": True,
        }, indent=1))
        self.env = child_env(HOME=str(self.home), GNUPGHOME=str(self.gnupg))

    def cmd(self, *args: str, timeout: float = 900.0) -> Ran:
        return run(["aptly", f"-config={self.conf}", *args], env=self.env, timeout=timeout)

    def size(self) -> dict[str, int]:
        return tree_size(self.root)

    def db_size(self) -> dict[str, int]:
        return tree_size(self.root / "db")

    def close(self) -> None:
        kill_gpg_agents(self.gnupg)


# --------------------------------------------------------------------------- the synthetic index

WORDS = ("library", "tool", "data", "file", "system", "network", "utility", "client", "server",
         "daemon", "plugin", "module", "python", "perl", "shared", "development", "documentation",
         "runtime", "support", "graphical", "command", "line", "interface", "driver", "kernel",
         "font", "theme", "game", "audio", "video", "image", "text", "parser", "compiler",
         "debugger", "binding", "extension", "common", "core", "base", "test")


def rfc822(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")


class SynthRepo:
    """A signed apt index of N synthetic stanzas under ROOT/synth.

    Stanzas look like Debian's (about 600 bytes each, distinct hashes). Each
    listed file exists as a few hundred random bytes, so that aptly can mirror
    the index too; pkgdepot never fetches them (cache-only snapshots record
    metadata only).
    """

    def __init__(self, root: Path, key: GpgKey, n: int, xz_preset: int) -> None:
        self.root = root
        self.key = key
        self.n = n
        self.xz_preset = xz_preset
        self.dists = root / "dists" / SUITE
        self.static: list[str] = []
        self.versions = ["1.0-1"] * n
        self.files: list[tuple[str, int, str, str]] = [("", 0, "", "")] * n
        self.clock = int(time.time()) - 30 * 86400  # Last-Modified of each publication
        self.release_text = ""
        rng = random.Random(20260101)
        for i in range(n):
            deps = ", ".join(["libc6 (>= 2.36)"] + [
                f"synth-pkg{rng.randrange(n):06d}" for _ in range(rng.randint(0, 5))])
            desc = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
            md5 = hashlib.md5(f"{i}{desc}".encode()).hexdigest()
            tags = ", ".join(sorted({f"role::{rng.choice(WORDS)}" for _ in range(3)}))
            self.static.append(
                f"Installed-Size: {rng.randint(10, 50000)}\n"
                "Maintainer: Benchmark Maintainers <bench@pkgdepot.invalid>\n"
                "Architecture: amd64\n"
                f"Depends: {deps}\n"
                f"Description: {desc}\n"
                f"Description-md5: {md5}\n"
                f"Tag: {tags}\n"
                f"Section: {rng.choice(('libs', 'utils', 'net', 'devel', 'doc', 'misc'))}\n"
                "Priority: optional\n")
        for i in range(n):
            self._write_file(i)

    @staticmethod
    def name(i: int) -> str:
        return f"synth-pkg{i:06d}"

    def _write_file(self, i: int) -> None:
        v = self.versions[i]
        rel = f"pool/main/s/synth-src{i // 50:04d}/{self.name(i)}_{v}_amd64.deb"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(random.randint(200, 800))
        path.write_bytes(data)
        self.files[i] = (rel, len(data), hashlib.md5(data).hexdigest(),
                         hashlib.sha256(data).hexdigest())

    def change(self, count: int) -> list[int]:
        """New versions (new files) of `count` packages spread over the index."""
        step = max(1, self.n // count)
        changed = list(range(0, self.n, step)[:count])
        for i in changed:
            major = int(self.versions[i].split(".")[0])
            self.versions[i] = f"{major + 1}.0-1"
            self._write_file(i)
        return changed

    def packages_text(self) -> bytes:
        parts = []
        for i in range(self.n):
            rel, size, md5, sha = self.files[i]
            parts.append(f"Package: {self.name(i)}\nVersion: {self.versions[i]}\n"
                         f"{self.static[i]}Filename: {rel}\nSize: {size}\n"
                         f"MD5sum: {md5}\nSHA256: {sha}\n\n")
        return "".join(parts).encode()

    def publish(self) -> dict[str, Any]:
        """Write Packages{,.gz,.xz}, Release, InRelease, Release.gpg (atomically each)."""
        t0 = time.monotonic()
        bdir = self.dists / PACKAGES_DIR
        bdir.mkdir(parents=True, exist_ok=True)
        text = self.packages_text()
        xz = subprocess.run(["xz", "-T2", f"-{self.xz_preset}", "-c"], input=text,
                            capture_output=True, timeout=300, check=True).stdout
        gz = gzip.compress(text, 9, mtime=0)
        files = {"Packages": text, "Packages.gz": gz, "Packages.xz": xz}
        self.clock += 1
        for name, data in files.items():
            self._put(bdir / name, data)
        lines = ["MD5Sum:"] + [f" {hashlib.md5(d).hexdigest()} {len(d):>10} {PACKAGES_DIR}/{n}"
                               for n, d in files.items()]
        lines += ["SHA256:"] + [f" {hashlib.sha256(d).hexdigest()} {len(d):>10} "
                                f"{PACKAGES_DIR}/{n}" for n, d in files.items()]
        self.release_text = "\n".join(lines) + "\n"
        self.sign(self.clock)
        return {"seconds": time.monotonic() - t0, "packages_bytes": len(text),
                "packages_gz_bytes": len(gz), "packages_xz_bytes": len(xz)}

    def sign(self, date: float, inrelease_only: bool = False) -> None:
        release = (
            "Origin: pkgdepot-bench\nLabel: pkgdepot-bench\n"
            f"Suite: {SUITE}\nCodename: {SUITE}\nDate: {rfc822(date)}\n"
            "Architectures: amd64\nComponents: main\n"
            "Description: synthetic index for the pkgdepot snapshot benchmark\n"
            + self.release_text)
        with tempfile.TemporaryDirectory(prefix=".sign", dir=self.root) as tmp_s:
            tmp = Path(tmp_s)
            (tmp / "Release").write_text(release)
            self.key.clearsign(tmp / "Release", tmp / "InRelease")
            names = ["InRelease"]
            if not inrelease_only:
                self.key.detach_sign(tmp / "Release", tmp / "Release.gpg", armor=True)
                names += ["Release", "Release.gpg"]
            for n in names:
                os.utime(tmp / n, (self.clock, self.clock))
                os.replace(tmp / n, self.dists / n)

    def _put(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.utime(tmp, (self.clock, self.clock))
        os.replace(tmp, path)


# --------------------------------------------------------------------------- benchmark


@dataclass
class Ctx:
    params: Params
    tmp: Path
    procs: Procs
    key: GpgKey
    origin: Origin
    pkgdepot_exe: str
    aptly_ok: bool
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        log(f"NOTE: {text}")
        self.notes.append(text)


def mirror_config(ctx: Ctx, path: Path, base: str = "debian") -> None:
    path.write_text(
        "[repos.deb]\n"
        f'upstreams = ["{ctx.origin.url}/{base}"]\n'
        f'keyring = "{ctx.key.public_armored}"\n'
        "[repos.deb.mirror]\n"
        f'suites = ["{SUITE}"]\ncomponents = ["main"]\narchitectures = ["amd64"]\n'
        f"concurrency = {ctx.params.concurrency}\n")


def bench_mirror(ctx: Ctx) -> dict[str, Any]:
    """Full, incremental (1% changed) and no-change sync of a real repository."""
    p = ctx.params
    res: dict[str, Any] = {"packages": p.packages, "padding_bytes": p.padding}
    debian = ctx.tmp / "origin" / "debian"
    specs = [DebSpec(f"bench-{i:05d}", "1.0", size_padding=p.padding)
             for i in range(p.packages)]
    log(f"mirror: building {p.packages} .debs with dpkg-deb and apt-ftparchive")
    t0 = time.monotonic()
    repo = build_apt_repo(debian, ctx.key, specs, suite=SUITE)
    res["build_seconds"] = time.monotonic() - t0
    res["pool_bytes"] = sum((debian / pk.path).stat().st_size for pk in repo.packages)
    expected_full = {f"/debian/{pk.path}" for pk in repo.packages}

    conf = ctx.tmp / "pkgdepot-mirror.toml"
    mirror_config(ctx, conf)
    pd = Pkgdepot(ctx.pkgdepot_exe, ctx.tmp / "pd-mirror", conf)
    ap = Aptly(ctx.tmp / "aptly-mirror", ctx.key.public_keyring, p.concurrency) \
        if ctx.aptly_ok else None
    try:
        return _bench_mirror(ctx, res, debian, specs, expected_full, pd, ap)
    finally:
        if ap is not None:
            ap.close()


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The last of several runs of one step (its counts and traffic), with the
    median of their times and CPU, and every run's time under `runs`."""
    out = dict(runs[-1])
    out["seconds"] = statistics.median(r["seconds"] for r in runs)
    out["cpu"] = statistics.median(r["cpu"] for r in runs)
    out["runs"] = [round(r["seconds"], 3) for r in runs]
    return out


def copy_tree(src: Path, dest: Path) -> None:
    """`dest` becomes a copy of `src` (a data directory put back between
    runs), hard links kept as hard links (aptly's published pool is linked
    to its own pool, and it checks that they still are)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", str(src), str(dest)], timeout=300)


def settle() -> None:
    """Before a timed step: the machine writes out what the bench and the
    previous step left unwritten (the data directories just put back, the
    other tool's files), so that neither tool's time includes the writes of
    another, nor does the kernel start them in its middle."""
    os.sync()


def _pd_sync(ctx: Ctx, pd: Pkgdepot, expected: set[str] | None) -> dict[str, Any]:
    before = store_state(pd.data_dir) if pd.data_dir.exists() else {}
    settle()
    m = ctx.origin.mark()
    ran = pd.cli("mirror", "sync", "deb", timeout=900)
    reqs = ctx.origin.since(m)
    out: dict[str, Any] = {"seconds": ran.seconds, "cpu": ran.cpu, "traffic": traffic(reqs),
                           "output": ran.stdout.strip().splitlines()[-3:]}
    out["store_growth"] = growth(before, store_state(pd.data_dir))
    if expected is not None:
        out["once"] = check_once(reqs, expected)
    return out


def _aptly_step(ctx: Ctx, ap: Aptly, steps: list[list[str]],
                expected: set[str] | None) -> dict[str, Any]:
    before = ap.size() if ap.root.exists() else {}
    before_db = ap.db_size() if ap.root.exists() else {}
    settle()
    m = ctx.origin.mark()
    times = {}
    cpu = 0.0
    for argv in steps:
        ran = ap.cmd(*argv)
        times[" ".join(argv[:2])] = ran.seconds
        cpu += ran.cpu
    reqs = ctx.origin.since(m)
    out: dict[str, Any] = {"seconds": sum(times.values()), "cpu": cpu, "steps": times,
                           "traffic": traffic(reqs), "root_growth": growth(before, ap.size()),
                           "db_growth": growth(before_db, ap.db_size())}
    if expected is not None:
        out["once"] = check_once(reqs, expected)
    return out


def _in_turn(i: int, ours: Callable[[], None], theirs: Callable[[], None] | None) -> None:
    """Run the i-th repeat of a step for both tools, each going first in turn
    (pkgdepot in the 1st and 3rd, aptly in the 2nd), so that neither is
    always the one that runs right after the data directories were put back."""
    first, second = (ours, theirs) if i % 2 == 0 else (theirs, ours)
    for step in (first, second):
        if step is not None:
            step()


def _bench_mirror(ctx: Ctx, res: dict[str, Any], debian: Path, specs: list[DebSpec],
                  expected_full: set[str], pd: Pkgdepot, ap: Aptly | None) -> dict[str, Any]:
    p = ctx.params
    url = f"{ctx.origin.url}/debian"
    kr = f"-keyring={ctx.key.public_keyring}"

    # Each sync of the 3,000-package repository runs `repeats` times, the two
    # tools alternating (each going first in turn: `_in_turn`), each run from
    # the same state (the data directories are put back in between); the
    # median is reported, every run is checked.
    pd_runs: list[dict[str, Any]] = []
    ap_runs: list[dict[str, Any]] = []
    for i in range(p.repeats):
        def full_pd(i: int = i) -> None:
            log(f"mirror: full sync, pkgdepot (run {i + 1} of {p.repeats})")
            shutil.rmtree(pd.data_dir, ignore_errors=True)
            pd_runs.append(ran := _pd_sync(ctx, pd, expected_full))
            if not ran["once"]["ok"]:
                ctx.note(f"pkgdepot full sync did not fetch every package once: {ran['once']}")

        def full_ap(i: int = i) -> None:
            assert ap is not None
            log(f"mirror: full sync, aptly (mirror create + mirror update, run {i + 1})")
            shutil.rmtree(ap.root, ignore_errors=True)
            ap_runs.append(ran := _aptly_step(ctx, ap, [
                ["mirror", "create", kr, "-architectures=amd64", "deb", url, SUITE, "main"],
                ["mirror", "update", kr, "deb"]], expected_full))
            if not ran["once"]["ok"]:
                ctx.note(f"aptly full sync did not fetch every package once: {ran['once']}")

        _in_turn(i, full_pd, full_ap if ap is not None else None)
    res["full_pkgdepot"] = median_run(pd_runs)
    if ap is not None:
        res["full_aptly"] = median_run(ap_runs)
        res["full_aptly_snapshot"] = _aptly_step(
            ctx, ap, [["snapshot", "create", "m1", "from", "mirror", "deb"]], None)
        res["full_aptly_publish"] = _aptly_step(ctx, ap, [
            ["publish", "snapshot", "-skip-signing", "-skip-contents",
             f"-distribution={SUITE}", "m1", "deb"]], None)

    # 1% of the packages get a new version; the repository is republished and signed.
    count = max(1, round(p.packages * p.changed_percent / 100))
    step = p.packages // count
    changed = set(range(0, p.packages, step)[:count])
    specs2 = [DebSpec(s.name, "1.1", size_padding=p.padding) if i in changed else s
              for i, s in enumerate(specs)]
    time.sleep(1.1)  # a new Date and Last-Modified second for the new publication
    repo2 = build_apt_repo(debian, ctx.key, specs2, suite=SUITE)
    expected_inc = {f"/debian/{pk.path}" for pk in repo2.packages if pk.version == "1.1"}
    res["changed_packages"] = len(expected_inc)

    saved = ctx.tmp / "before-incremental"
    copy_tree(pd.data_dir, saved / "pkgdepot")
    if ap is not None:
        copy_tree(ap.root, saved / "aptly")
    pd_runs, ap_runs = [], []
    for i in range(p.repeats):
        if i:  # both back to the state before the change
            copy_tree(saved / "pkgdepot", pd.data_dir)
            if ap is not None:
                copy_tree(saved / "aptly", ap.root)

        def inc_pd(i: int = i) -> None:
            log(f"mirror: incremental sync ({len(expected_inc)} new versions), pkgdepot "
                f"(run {i + 1} of {p.repeats})")
            pd_runs.append(ran := _pd_sync(ctx, pd, expected_inc))
            if not ran["once"]["ok"]:
                ctx.note(f"pkgdepot incremental sync fetched other than the new packages: "
                         f"{ran['once']}")

        def inc_ap(i: int = i) -> None:
            assert ap is not None
            log(f"mirror: incremental sync, aptly (run {i + 1})")
            ap_runs.append(ran := _aptly_step(
                ctx, ap, [["mirror", "update", kr, "deb"]], expected_inc))
            if not ran["once"]["ok"]:
                ctx.note(f"aptly incremental sync fetched other than the new packages: "
                         f"{ran['once']}")

        _in_turn(i, inc_pd, inc_ap if ap is not None else None)
    shutil.rmtree(saved, ignore_errors=True)
    res["incremental_pkgdepot"] = median_run(pd_runs)
    if ap is not None:
        res["incremental_aptly"] = median_run(ap_runs)
        res["incremental_aptly_snapshot"] = _aptly_step(
            ctx, ap, [["snapshot", "create", "m2", "from", "mirror", "deb"]], None)
        res["incremental_aptly_publish"] = _aptly_step(
            ctx, ap, [["publish", "switch", "-skip-signing", "-skip-contents", SUITE, "deb",
                       "m2"]], None)

    log("mirror: no-change sync, pkgdepot and aptly")
    pd_runs, ap_runs = [], []
    for i in range(p.repeats):
        def nc_pd() -> None:
            pd_runs.append(ran := _pd_sync(ctx, pd, set()))
            if ran["traffic"]["package_requests"]:
                ctx.note("pkgdepot no-change sync fetched packages")

        def nc_ap() -> None:
            assert ap is not None
            ap_runs.append(_aptly_step(ctx, ap, [["mirror", "update", kr, "deb"]], set()))

        _in_turn(i, nc_pd, nc_ap if ap is not None else None)
    res["nochange_pkgdepot"] = median_run(pd_runs)
    if ap is not None:
        res["nochange_aptly"] = median_run(ap_runs)

    # The same kind of syncs, handed to a running depot (server.admin_listen):
    # the command only asks; the server, already started, does the work.
    res.update(_bench_delegated(ctx, debian, specs2, changed, pd))

    # What each tool says changed between the two states.
    snaps = pd.snapshots()
    res["pkgdepot_snapshots"] = len(snaps)
    if len(snaps) >= 2:
        a, b = snaps[-1]["timestamp"], snaps[0]["timestamp"]  # newest first
        ran = pd.cli("snapshot", "diff", "deb", a, b, "--json")
        d = json.loads(ran.stdout)
        res["diff_pkgdepot"] = {"seconds": ran.seconds, "upgraded": len(d["upgraded"]),
                                "added": len(d["added"]), "removed": len(d["removed"])}
    else:
        ctx.note(f"pkgdepot mirror has {len(snaps)} snapshot(s) after two changing syncs")
    if ap is not None:
        ran = ap.cmd("snapshot", "diff", "m1", "m2")
        res["diff_aptly"] = {"seconds": ran.seconds,
                             "changed_lines": sum(1 for ln in ran.stdout.splitlines()
                                                  if ln.lstrip().startswith("!"))}
        res["aptly_root"] = ap.size()
    res["pkgdepot_store"] = store_state(pd.data_dir)
    return res


def _bench_delegated(ctx: Ctx, debian: Path, specs: list[DebSpec], changed: set[int],
                     pd: Pkgdepot) -> dict[str, Any]:
    """Another 1% changed, synced by `pkgdepot mirror sync` against a depot
    that listens on server.admin_listen (the sync runs in the server; its CPU
    is counted with the command's), then a no-change sync the same way."""
    token = ctx.tmp / "admin-token"
    token.write_text(secrets.token_hex(16) + "\n")
    token.chmod(0o600)
    conf = ctx.tmp / "pkgdepot-mirror-admin.toml"
    mirror_config(ctx, conf)
    admin_port, port = free_port(), free_port()
    with open(conf, "a") as f:
        f.write(f'[server]\nadmin_listen = "127.0.0.1:{admin_port}"\n'
                f'admin_token_file = "{token}"\n')
    proc = ctx.procs.start("pkgdepot serve (admin)", [
        *pd.exe.split(), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
        str(pd.data_dir), "--config", str(conf)], ctx.tmp / "pkgdepot-admin-serve.log")
    out: dict[str, Any] = {}
    try:
        wait_port(admin_port, proc)
        via = Pkgdepot(pd.exe, pd.data_dir, conf)
        specs3 = [DebSpec(sp.name, "1.2", size_padding=sp.size_padding) if i in changed
                  else sp for i, sp in enumerate(specs)]
        time.sleep(1.1)
        repo3 = build_apt_repo(debian, ctx.key, specs3, suite=SUITE)
        expected = {f"/debian/{pk.path}" for pk in repo3.packages if pk.version == "1.2"}
        log(f"mirror: incremental sync ({len(expected)} new versions) by the running depot")
        for key, want in (("incremental_delegated", expected), ("nochange_delegated", set())):
            cpu0 = proc_cpu(proc.pid)
            r = _pd_sync(ctx, via, want)
            r["server_cpu"] = proc_cpu(proc.pid) - cpu0
            r["cpu"] += r["server_cpu"]
            if not any("by the depot" in line for line in r["output"]):
                ctx.note(f"{key}: the command did not hand the sync to the depot: "
                         f"{r['output']}")
            if want and not r["once"]["ok"]:
                ctx.note(f"{key}: fetched other than the new packages: {r['once']}")
            out[key] = r
    finally:
        proc.stop()
    return out


def snapshot_config(ctx: Ctx, path: Path) -> None:
    path.write_text(
        "[cache]\nrevalidate_after = 0\n"
        "[repos.deb]\n"
        f'upstreams = ["{ctx.origin.url}/synth"]\n'
        f'keyring = "{ctx.key.public_armored}"\n')


class Depot:
    """A running `pkgdepot serve` with a cache-only repository `deb`."""

    def __init__(self, ctx: Ctx, pd: Pkgdepot) -> None:
        self.ctx = ctx
        self.pd = pd
        self.fast_clock = False
        self._start()

    def _start(self, wrapper: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.proc = self.ctx.procs.start("pkgdepot serve", [
            *wrapper, *self.pd.exe.split(), "serve", "--listen", f"127.0.0.1:{self.port}",
            "--data-dir", self.pd.data_dir, "--config", self.pd.config],
            self.ctx.tmp / "pkgdepot-serve.log", env)
        end = time.monotonic() + 30
        while True:
            if not self.proc.alive():
                raise BenchError(f"pkgdepot serve exited:\n{self.proc.tail()}")
            with contextlib.suppress(OSError):
                if http(self.url("/"), timeout=2).status == 200:
                    break
            if time.monotonic() > end:
                raise BenchError(f"pkgdepot serve not ready after 30 s:\n{self.proc.tail()}")
            time.sleep(0.1)

    def restart_with_fast_clock(self) -> bool:
        """Run the server again (same data) with its clocks going FAST_CLOCK
        times as fast (libfaketime: its timeouts pass as fast too), so that
        each state it sees falls in a second of its own. False, and the server
        is left as it was, without the `faketime` command."""
        if shutil.which("faketime") is None:
            return False
        self.proc.stop()
        self._start(["faketime", "-f", f"+0 x{FAST_CLOCK}"])
        self.fast_clock = True
        return True

    def clock(self) -> int:
        """The server's wall clock (its Date header), in whole seconds."""
        got = http(self.url("/"))
        return int(parsedate_to_datetime(got.headers["Date"]).timestamp())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, method: str = "GET") -> Got:
        got = http(self.url(path), method)
        if got.status != 200:
            raise BenchError(f"{method} {path}: HTTP {got.status}: {got.body[:300]!r}")
        return got

    def history(self) -> list[dict[str, Any]]:
        data = json.loads(self.get("/snapshot/deb/index.json").body)
        return list(data["snapshots"])


INRELEASE = f"/deb/dists/{SUITE}/InRelease"
PACKAGES_XZ = f"/deb/dists/{SUITE}/{PACKAGES_DIR}/Packages.xz"


def _see_state(ctx: Ctx, depot: Depot, synth: SynthRepo) -> dict[str, Any]:
    """Fetch InRelease and Packages.xz through the depot, as apt would, and wait
    until the latest snapshot holds this Packages.xz."""
    xz = (synth.dists / PACKAGES_DIR / "Packages.xz").read_bytes()
    before = store_state(depot.pd.data_dir)
    n_before = len(depot.history())
    m = ctx.origin.mark()
    cpu0 = proc_cpu(depot.proc.pid)
    t0 = time.monotonic()
    g1 = depot.get(INRELEASE)
    g2 = depot.get(PACKAGES_XZ)
    t_fetch = time.monotonic() - t0
    if hashlib.sha256(g2.body).digest() != hashlib.sha256(xz).digest():
        raise BenchError("the depot served another Packages.xz than the origin has")
    # The response may end before the depot has parsed the index and completed the
    # snapshot: poll the latest snapshot until it serves this Packages.xz.
    latest = f"/snapshot/deb/latest/dists/{SUITE}/{PACKAGES_DIR}/Packages.xz"
    end = time.monotonic() + 120
    polls = 0
    while True:
        h = http(depot.url(latest), "HEAD", timeout=30)
        polls += 1
        if h.status == 200 and int(h.headers.get("Content-Length", -1)) == len(xz):
            break
        if time.monotonic() > end:
            raise BenchError(f"latest snapshot has no new Packages.xz after 120 s ({h.status})")
        time.sleep(0.01)
    t_complete = time.monotonic() - t0
    cpu = proc_cpu(depot.proc.pid) - cpu0
    reqs = ctx.origin.since(m)
    hist = depot.history()
    g = growth(before, store_state(depot.pd.data_dir))
    return {
        "inrelease_seconds": g1.seconds, "inrelease_cache": g1.headers.get("X-Pkgdepot-Cache"),
        "packages_xz_seconds": g2.seconds,
        "packages_xz_cache": g2.headers.get("X-Pkgdepot-Cache"),
        "fetch_seconds": t_fetch, "complete_seconds": t_complete, "polls": polls,
        "server_cpu": cpu,
        "snapshots_before": n_before, "snapshots_after": len(hist),
        "snapshot": hist[0]["timestamp"] if hist else None,
        "growth": g, "added_bytes": pd_added(g),
        "origin": traffic(reqs),
    }


def _measure_queries(ctx: Ctx, depot: Depot, a: str, b: str, upgraded: int) -> dict[str, Any]:
    """snapshot list (CLI), index.json, resolving a time, and diff A B (CLI)."""
    p = ctx.params
    hist = depot.history()
    out: dict[str, Any] = {"snapshots": len(hist)}
    t_list, ran = best_of(3, lambda: depot.pd.cli("snapshot", "list", "deb"))
    out["list_seconds"] = t_list
    out["list_lines"] = len(ran.stdout.splitlines())
    out["list_json_seconds"], _ = best_of(
        3, lambda: depot.pd.cli("snapshot", "list", "deb", "--json"))
    idx = [depot.get("/snapshot/deb/index.json").seconds for _ in range(5)]
    out["index_json_ms"] = statistics.median(idx) * 1000
    stamps = [s["timestamp"] for s in hist]
    rng = random.Random(7)
    times: list[float] = []
    wrong = 0
    for i in range(p.resolve_requests):
        st = stamps[rng.randrange(len(stamps))] if i % 2 else rng.choice((a, b))
        g = depot.get(f"/snapshot/deb/{st}/dists/{SUITE}/InRelease")
        times.append(g.seconds)
        if g.headers.get("X-Pkgdepot-Snapshot") != st:
            wrong += 1
    out["resolve_inrelease"] = ms_stats(times)
    out["resolve_wrong_snapshot"] = wrong
    ran = depot.pd.cli("snapshot", "diff", "deb", a, b, "--json")
    d = json.loads(ran.stdout)
    t_diff, _ = best_of(2, lambda: depot.pd.cli("snapshot", "diff", "deb", a, b, "--json"))
    out["diff_seconds"] = min(ran.seconds, t_diff)
    out["diff_upgraded"] = len(d["upgraded"])
    out["diff_other"] = len(d["added"]) + len(d["removed"]) + len(d["downgraded"])
    if out["diff_upgraded"] != upgraded or out["diff_other"]:
        ctx.note(f"pkgdepot snapshot diff {a} {b}: {out['diff_upgraded']} upgraded, "
                 f"{out['diff_other']} other, expected {upgraded} upgraded")
    out["version_seconds"], _ = best_of(3, lambda: run([*depot.pd.exe.split(), "--version"]))
    return out


def bench_snapshots(ctx: Ctx) -> dict[str, Any]:
    p = ctx.params
    res: dict[str, Any] = {"index_packages": p.index_packages}
    log(f"snapshots: generating a {p.index_packages}-stanza index and its files")
    t0 = time.monotonic()
    synth = SynthRepo(ctx.tmp / "origin" / "synth", ctx.key, p.index_packages, p.xz_preset)
    res["generate_seconds"] = time.monotonic() - t0
    res["publish_a"] = synth.publish()
    log(f"snapshots: index A: {res['publish_a']}")

    conf = ctx.tmp / "pkgdepot-cache.toml"
    snapshot_config(ctx, conf)
    pd = Pkgdepot(ctx.pkgdepot_exe, ctx.tmp / "pd-cache", conf)
    depot = Depot(ctx, pd)
    ap = Aptly(ctx.tmp / "aptly-synth", ctx.key.public_keyring, p.concurrency) \
        if ctx.aptly_ok else None
    try:
        return _bench_snapshots(ctx, res, synth, depot, ap)
    finally:
        if ap is not None:
            ap.close()
        depot.proc.stop()


def _bench_snapshots(ctx: Ctx, res: dict[str, Any], synth: SynthRepo, depot: Depot,
                     ap: Aptly | None) -> dict[str, Any]:
    p = ctx.params
    url = f"{ctx.origin.url}/synth"
    kr = f"-keyring={ctx.key.public_keyring}"

    log("snapshots: pkgdepot sees state A")
    res["first_pkgdepot"] = first = _see_state(ctx, depot, synth)
    if first["snapshots_after"] != 1:
        ctx.note(f"pkgdepot: {first['snapshots_after']} snapshots after the first state")
    log(f"  {first['complete_seconds']:.2f} s, {first['added_bytes'] / 1e6:.1f} MB")

    log("snapshots: unchanged fetch")
    m = ctx.origin.mark()
    g1 = depot.get(INRELEASE)
    g2 = depot.get(PACKAGES_XZ)
    time.sleep(0.5)
    n_after = len(depot.history())
    res["unchanged_pkgdepot"] = {
        "inrelease_seconds": g1.seconds, "inrelease_cache": g1.headers.get("X-Pkgdepot-Cache"),
        "packages_xz_seconds": g2.seconds,
        "packages_xz_cache": g2.headers.get("X-Pkgdepot-Cache"),
        "snapshots_added": n_after - first["snapshots_after"],
        "origin": traffic(ctx.origin.since(m))}
    if n_after != first["snapshots_after"]:
        ctx.note("pkgdepot recorded a snapshot for an unchanged repository")

    conf_m = ctx.tmp / "pkgdepot-synth-mirror.toml"
    mirror_config(ctx, conf_m, "synth")
    pdm = Pkgdepot(ctx.pkgdepot_exe, ctx.tmp / "pd-synth-mirror", conf_m)
    log(f"snapshots: pkgdepot mirrors state A ({p.index_packages} files)")
    res["pkgdepot_mirror_a"] = mir_a = _pd_sync(
        ctx, pdm, {f"/synth/{f[0]}" for f in synth.files})
    if not mir_a["once"]["ok"]:
        ctx.note(f"pkgdepot sync of the big index did not fetch every file once: "
                 f"{mir_a['once']}")
    if ap is not None:
        log(f"snapshots: aptly mirrors state A ({p.index_packages} files)")
        res["aptly_mirror_a"] = _aptly_step(ctx, ap, [
            ["mirror", "create", kr, "-architectures=amd64", "synth", url, SUITE, "main"],
            ["mirror", "update", kr, "synth"]], {f"/synth/{f[0]}" for f in synth.files})
        res["first_aptly"] = _aptly_step(
            ctx, ap, [["snapshot", "create", "big1", "from", "mirror", "synth"]], None)
        res["first_aptly"]["db_after"] = ap.db_size()

    count = max(1, round(p.index_packages * p.changed_percent / 100))
    changed = synth.change(count)
    res["changed"] = len(changed)
    res["publish_b"] = synth.publish()
    log("snapshots: pkgdepot sees state B (1% changed)")
    res["second_pkgdepot"] = second = _see_state(ctx, depot, synth)
    log(f"  {second['complete_seconds']:.2f} s, {second['added_bytes'] / 1e6:.1f} MB")
    if second["snapshots_after"] != second["snapshots_before"] + 1:
        ctx.note(f"pkgdepot: state B made {second['snapshots_after'] - second['snapshots_before']}"
                 " snapshots")
    a, b = first["snapshot"], second["snapshot"]
    res["stamps"] = {"a": a, "b": b}

    log("snapshots: pkgdepot mirror sync to state B")
    res["pkgdepot_mirror_b"] = mir_b = _pd_sync(
        ctx, pdm, {f"/synth/{synth.files[i][0]}" for i in changed})
    if not mir_b["once"]["ok"]:
        ctx.note(f"pkgdepot incremental sync of the big index fetched other than the new "
                 f"files: {mir_b['once']}")
    if ap is not None:
        log("snapshots: aptly updates to state B")
        res["aptly_mirror_b"] = _aptly_step(ctx, ap, [["mirror", "update", kr, "synth"]],
                                            {f"/synth/{synth.files[i][0]}" for i in changed})
        res["second_aptly"] = _aptly_step(
            ctx, ap, [["snapshot", "create", "big2", "from", "mirror", "synth"]], None)
        res["aptly_queries_2"] = _aptly_queries(ap, "big1", "big2")

    log("snapshots: list / resolve / diff with 2 snapshots")
    res["queries_2"] = _measure_queries(ctx, depot, a, b, res["changed"])

    res["many_pkgdepot"] = _many_snapshots(ctx, depot, synth)
    log(f"snapshots: list / resolve / diff with {len(depot.history())} snapshots")
    res["queries_n"] = _measure_queries(ctx, depot, a, b, res["changed"])
    res["future"] = _future_check(ctx, depot)

    if ap is not None:
        res["many_aptly"] = _many_aptly(ctx, ap)
        res["aptly_queries_n"] = _aptly_queries(ap, "big1", "big2")
        log("snapshots: aptly publish snapshot (60k) and publish switch")
        res["aptly_publish"] = _aptly_step(ctx, ap, [
            ["publish", "snapshot", "-skip-signing", "-skip-contents",
             f"-distribution={SUITE}", "big1", "synth"]], None)
        res["aptly_publish_switch"] = _aptly_step(ctx, ap, [
            ["publish", "switch", "-skip-signing", "-skip-contents", SUITE, "synth", "big2"]],
            None)
        res["aptly_root"] = ap.size()
    res["pkgdepot_store"] = store_state(depot.pd.data_dir)
    return res


def _aptly_queries(ap: Aptly, a: str, b: str) -> dict[str, Any]:
    t_list, ran = best_of(3, lambda: ap.cmd("snapshot", "list"))
    t_diff, dran = best_of(3, lambda: ap.cmd("snapshot", "diff", a, b))
    t_ver, _ = best_of(3, lambda: ap.cmd("version"))
    return {"list_seconds": t_list, "list_lines": len(ran.stdout.splitlines()),
            "diff_seconds": t_diff,
            "diff_changed_lines": sum(1 for ln in dran.stdout.splitlines()
                                      if ln.lstrip().startswith("!")),
            "version_seconds": t_ver}


def _many_snapshots(ctx: Ctx, depot: Depot, synth: SynthRepo) -> dict[str, Any]:
    """Republish InRelease with a new Date, fetch it through the depot: one new
    snapshot each (the 60k Packages.xz stays the same)."""
    p = ctx.params
    start_n = len(depot.history())
    target = p.snapshots
    # States are whole seconds: changes within one second make that second's
    # state. To reach `target` snapshots in minutes, not a quarter of an hour,
    # the server's wall clock runs FAST_CLOCK times as fast from here on.
    if depot.restart_with_fast_clock():
        log(f"snapshots: pkgdepot serve restarted with its clock at {FAST_CLOCK}x (faketime)")
    else:
        ctx.note("faketime is missing (bench --setup installs it): one snapshot per second "
                 "at most, so the target number of snapshots may not be reached")
    log(f"snapshots: making {max(0, target - start_n)} small-change snapshots "
        f"(at most {p.snapshot_budget:.0f} s)")
    before = store_state(depot.pd.data_dir)
    times: list[float] = []
    sign_times: list[float] = []
    statuses: Counter[str] = Counter()
    t_start = time.monotonic()
    cpu0 = proc_cpu(depot.proc.pid)
    made = start_n
    while made < target and time.monotonic() - t_start < p.snapshot_budget:
        synth.clock += 1
        t = time.monotonic()
        synth.sign(synth.clock, inrelease_only=True)
        sign_times.append(time.monotonic() - t)
        g = depot.get(INRELEASE)
        times.append(g.seconds)
        statuses[str(g.headers.get("X-Pkgdepot-Cache"))] += 1
        made += 1
    elapsed = time.monotonic() - t_start
    cpu = proc_cpu(depot.proc.pid) - cpu0
    time.sleep(0.5)
    hist = depot.history()
    grown = growth(before, store_state(depot.pd.data_dir))
    n_new = len(hist) - start_n
    out = {
        "target": target, "fetches": len(times), "snapshots_added": n_new,
        "snapshots_total": len(hist), "seconds": elapsed, "cache_status": dict(statuses),
        "server_clock_speed": FAST_CLOCK if depot.fast_clock else 1,
        "server_cpu_per_snapshot": cpu / len(times) if times else None,
        "fetch_first50": ms_stats(times[:50]), "fetch_last50": ms_stats(times[-50:]),
        "sign": ms_stats(sign_times),
        "growth": grown,
        "added_bytes_per_snapshot": pd_added(grown) / n_new if n_new else None,
    }
    if len(hist) < target:
        ctx.note(f"reached {len(hist)} snapshots, not {target} (time budget "
                 f"{p.snapshot_budget:.0f} s)")
    if n_new != len(times):
        ctx.note(f"{len(times)} changed InRelease fetches made {n_new} snapshots")
    return out


def _future_check(ctx: Ctx, depot: Depot) -> dict[str, Any]:
    """Snapshot timestamps are whole seconds and strictly increasing: with more than
    one new state per second they would run ahead of the clock. What does 'now'
    (the server's clock, which may run fast: see `_many_snapshots`) resolve to?"""
    hist = depot.history()
    now = depot.clock()
    latest = int(hist[0]["created"]) if hist else now
    now_stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    g = http(depot.url(f"/snapshot/deb/{now_stamp}/dists/{SUITE}/InRelease"))
    got = g.headers.get("X-Pkgdepot-Snapshot")
    later = sum(1 for s in hist if int(s["created"]) > now)
    out = {"now": now_stamp, "latest": hist[0]["timestamp"] if hist else None,
           "latest_ahead_seconds": latest - now, "snapshots_after_now": later,
           "now_resolves_to": got, "now_status": g.status}
    if later:
        ctx.note(f"after the small-change snapshots the newest snapshot is stamped "
                 f"{latest - now} s in the future ({out['latest']}, now {now_stamp}); "
                 f"/snapshot/deb/{now_stamp}/ resolves to {got}, so {later} newer states are "
                 "not reachable by time 'now'")
    return out


def _many_aptly(ctx: Ctx, ap: Aptly) -> dict[str, Any]:
    p = ctx.params
    log(f"snapshots: {p.aptly_snapshots} more aptly snapshots of the big mirror")
    before_root, before_db = ap.size(), ap.db_size()
    times = []
    for i in range(p.aptly_snapshots):
        times.append(ap.cmd("snapshot", "create", f"extra{i}", "from", "mirror",
                            "synth").seconds)
    return {"count": len(times), "create": ms_stats(times),
            "root_growth": growth(before_root, ap.size()),
            "db_growth": growth(before_db, ap.db_size()),
            "disk_bytes_per_snapshot":
                (ap.size()["disk"] - before_root["disk"]) / max(1, len(times))}


# --------------------------------------------------------------------------- report


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} ms"


def fmt_b(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f} MB"
    if abs(x) >= 1e3:
        return f"{x / 1e3:.1f} kB"
    return f"{x:.0f} B"


def dig(d: dict[str, Any], *keys: str) -> Any:
    cur: Any = d
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


Row = tuple[str, float | None, float | None, Callable[[float | None], str], str]


def rows(res: dict[str, Any]) -> list[Row]:
    m = res.get("mirror", {})
    s = res.get("snapshots", {})
    out: list[Row] = []

    def add(label: str, a: Any, b: Any, f: Callable[[float | None], str] = fmt_s,
            note: str = "") -> None:
        out.append((label, None if a is None else float(a), None if b is None else float(b),
                    f, note))

    def tot(*parts: Any) -> float | None:
        return None if any(x is None for x in parts) else float(sum(parts))

    def runs(step: str) -> str:
        """Each run's time of a repeated step, pkgdepot's then aptly's."""
        pd_runs, ap_runs = dig(m, f"{step}_pkgdepot", "runs"), dig(m, f"{step}_aptly", "runs")
        if not pd_runs:
            return ""
        out = "median of runs " + "/".join(f"{x:.2f}" for x in pd_runs)
        return out + (" vs " + "/".join(f"{x:.2f}" for x in ap_runs) if ap_runs else "")

    if m:
        n = m.get("packages")
        add(f"mirror {n} pkgs: full sync", dig(m, "full_pkgdepot", "seconds"),
            dig(m, "full_aptly", "seconds"),
            note="aptly: mirror create + update; " + runs("full"))
        add("full sync + servable snapshot", dig(m, "full_pkgdepot", "seconds"),
            tot(dig(m, "full_aptly", "seconds"), dig(m, "full_aptly_snapshot", "seconds"),
                dig(m, "full_aptly_publish", "seconds")),
            note="aptly: + snapshot create + publish snapshot")
        add("full sync: CPU (user+sys)", dig(m, "full_pkgdepot", "cpu"),
            dig(m, "full_aptly", "cpu"), note="less sensitive to other load than wall time")
        add("full sync: packages fetched once", dig(m, "full_pkgdepot", "once", "fetched_once"),
            dig(m, "full_aptly", "once", "fetched_once"), lambda x: "-" if x is None
            else f"{x:.0f}", note=f"of {n}")
        add("incremental: new packages fetched once",
            dig(m, "incremental_pkgdepot", "once", "fetched_once"),
            dig(m, "incremental_aptly", "once", "fetched_once"), lambda x: "-" if x is None
            else f"{x:.0f}", note=f"of {m.get('changed_packages')}, and no other package")
        add("full sync: bytes from origin", dig(m, "full_pkgdepot", "traffic", "bytes"),
            dig(m, "full_aptly", "traffic", "bytes"), fmt_b)
        add("full sync: index bytes from origin",
            dig(m, "full_pkgdepot", "traffic", "metadata_bytes"),
            dig(m, "full_aptly", "traffic", "metadata_bytes"), fmt_b)
        add("full sync: storage added",
            None if "full_pkgdepot" not in m else pd_added(m["full_pkgdepot"]["store_growth"]),
            tot(dig(m, "full_aptly", "root_growth", "disk"),
                dig(m, "full_aptly_snapshot", "root_growth", "disk")), fmt_b,
            note="disk usage; aptly incl. snapshot")
        c = m.get("changed_packages")
        add(f"incremental sync ({c} new versions)", dig(m, "incremental_pkgdepot", "seconds"),
            dig(m, "incremental_aptly", "seconds"), note=runs("incremental"))
        add("incremental + servable snapshot", dig(m, "incremental_pkgdepot", "seconds"),
            tot(dig(m, "incremental_aptly", "seconds"),
                dig(m, "incremental_aptly_snapshot", "seconds"),
                dig(m, "incremental_aptly_publish", "seconds")),
            note="aptly: + snapshot create + publish switch")
        add("incremental: CPU (user+sys)", dig(m, "incremental_pkgdepot", "cpu"),
            dig(m, "incremental_aptly", "cpu"))
        add("incremental: bytes from origin", dig(m, "incremental_pkgdepot", "traffic", "bytes"),
            dig(m, "incremental_aptly", "traffic", "bytes"), fmt_b)
        add("no-change sync", dig(m, "nochange_pkgdepot", "seconds"),
            dig(m, "nochange_aptly", "seconds"), note=runs("nochange"))
        add("no-change: bytes from origin", dig(m, "nochange_pkgdepot", "traffic", "bytes"),
            dig(m, "nochange_aptly", "traffic", "bytes"), fmt_b)
        add("incremental sync, by the running depot (admin API)",
            dig(m, "incremental_delegated", "seconds"), dig(m, "incremental_aptly", "seconds"),
            note="another 1% changed; `pkgdepot mirror sync` hands it to the server")
        add("... CPU (command + server)", dig(m, "incremental_delegated", "cpu"),
            dig(m, "incremental_aptly", "cpu"))
        add("no-change sync, by the running depot", dig(m, "nochange_delegated", "seconds"),
            dig(m, "nochange_aptly", "seconds"))
        add("snapshot diff of the two states", dig(m, "diff_pkgdepot", "seconds"),
            dig(m, "diff_aptly", "seconds"))
    if s:
        n = s.get("index_packages")
        add(f"{n}-pkg index: first snapshot", dig(s, "first_pkgdepot", "complete_seconds"),
            dig(s, "first_aptly", "seconds"),
            note="pkgdepot: GET InRelease + Packages.xz until the snapshot is complete; "
                 "aptly: snapshot create from mirror")
        add("first state: metadata storage added", dig(s, "first_pkgdepot", "added_bytes"),
            tot(dig(s, "aptly_mirror_a", "db_growth", "disk"),
                dig(s, "first_aptly", "db_growth", "disk")), fmt_b,
            note="pkgdepot: blobs (du) + catalog (logical); aptly: db/ growth by mirror "
                 "create+update and snapshot create (pool excluded)")
        add("second snapshot (1% changed)", dig(s, "second_pkgdepot", "complete_seconds"),
            dig(s, "second_aptly", "seconds"))
        add("second state: metadata storage added", dig(s, "second_pkgdepot", "added_bytes"),
            tot(dig(s, "aptly_mirror_b", "db_growth", "disk"),
                dig(s, "second_aptly", "db_growth", "disk")), fmt_b,
            note="aptly: db/ growth by mirror update and snapshot create")
        add("unchanged refetch (no snapshot)",
            tot(dig(s, "unchanged_pkgdepot", "inrelease_seconds"),
                dig(s, "unchanged_pkgdepot", "packages_xz_seconds")), None,
            note=f"snapshots added: {dig(s, 'unchanged_pkgdepot', 'snapshots_added')}")
        add("small-change snapshot (median)",
            None if dig(s, "many_pkgdepot", "fetch_last50", "median_ms") is None
            else dig(s, "many_pkgdepot", "fetch_last50", "median_ms") / 1000,
            None if dig(s, "many_aptly", "create", "median_ms") is None
            else dig(s, "many_aptly", "create", "median_ms") / 1000,
            note="pkgdepot: new InRelease only (last 50); aptly: snapshot create")
        add("storage per small-change snapshot",
            dig(s, "many_pkgdepot", "added_bytes_per_snapshot"),
            dig(s, "many_aptly", "disk_bytes_per_snapshot"), fmt_b)
        n2 = dig(s, "queries_2", "snapshots")
        nn = dig(s, "queries_n", "snapshots")
        an = None if dig(s, "many_aptly", "count") is None else dig(s, "many_aptly", "count") + 2
        add(f"snapshot list ({n2} / {an if an else '-'} snapshots)",
            dig(s, "queries_2", "list_seconds"), dig(s, "aptly_queries_2", "list_seconds"),
            note="CLI, incl. start-up")
        add(f"snapshot list ({nn} / {an if an else '-'} snapshots)",
            dig(s, "queries_n", "list_seconds"), dig(s, "aptly_queries_n", "list_seconds"))
        add(f"resolve /snapshot/deb/TIME/.../InRelease ({n2})",
            None if dig(s, "queries_2", "resolve_inrelease", "median_ms") is None
            else dig(s, "queries_2", "resolve_inrelease", "median_ms") / 1000, None,
            note="median HTTP GET")
        add(f"resolve /snapshot/deb/TIME/.../InRelease ({nn})",
            None if dig(s, "queries_n", "resolve_inrelease", "median_ms") is None
            else dig(s, "queries_n", "resolve_inrelease", "median_ms") / 1000, None)
        add(f"diff A B, {n}-pkg index ({n2} snapshots)", dig(s, "queries_2", "diff_seconds"),
            dig(s, "aptly_queries_2", "diff_seconds"), note="CLI, incl. start-up")
        add(f"diff A B ({nn} snapshots)", dig(s, "queries_n", "diff_seconds"),
            dig(s, "aptly_queries_n", "diff_seconds"))
        add("CLI start-up (--version)", dig(s, "queries_2", "version_seconds"),
            dig(s, "aptly_queries_2", "version_seconds"))
        add(f"mirror the {n}-pkg index: full sync", dig(s, "pkgdepot_mirror_a", "seconds"),
            dig(s, "aptly_mirror_a", "seconds"), note="every listed file: 200-800 random bytes")
        add("big index full sync: CPU (user+sys)", dig(s, "pkgdepot_mirror_a", "cpu"),
            dig(s, "aptly_mirror_a", "cpu"))
        add("big index full sync: files fetched once",
            dig(s, "pkgdepot_mirror_a", "once", "fetched_once"),
            dig(s, "aptly_mirror_a", "once", "fetched_once"),
            lambda x: "-" if x is None else f"{x:.0f}", note=f"of {n}")
        add(f"big index incremental ({dig(s, 'changed')} new)",
            dig(s, "pkgdepot_mirror_b", "seconds"), dig(s, "aptly_mirror_b", "seconds"))
        add("big index incremental: CPU (user+sys)", dig(s, "pkgdepot_mirror_b", "cpu"),
            dig(s, "aptly_mirror_b", "cpu"))
        add("big index incremental: bytes from origin",
            dig(s, "pkgdepot_mirror_b", "traffic", "bytes"),
            dig(s, "aptly_mirror_b", "traffic", "bytes"), fmt_b)
        add("aptly: publish snapshot / switch", None,
            tot(dig(s, "aptly_publish", "seconds"), dig(s, "aptly_publish_switch", "seconds")),
            note="pkgdepot serves snapshots as recorded")
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = ["| measurement | pkgdepot | aptly | pkgdepot / aptly | notes |",
             "|---|---:|---:|---:|---|"]
    for label, a, b, f, note in rows(res):
        ratio = "-"
        if a is not None and b is not None and b != 0:
            ratio = f"{a / b:.2f}"
        lines.append(f"| {label} | {f(a)} | {f(b)} | {ratio} | {note} |")
    return "\n".join(lines)


def table_json(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"measurement": label, "pkgdepot": a, "aptly": b,
             "ratio": (a / b if a is not None and b else None), "notes": note}
            for label, a, b, _f, note in rows(res)]


# --------------------------------------------------------------------------- main


def tool_version(argv: Sequence[str]) -> str:
    try:
        p = subprocess.run(list(argv), capture_output=True, timeout=30, check=False,
                           env=child_env())
        return (p.stdout + p.stderr).decode(errors="replace").strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unavailable"


def setup() -> int:
    """apt-get install what the bench needs; no service is left started by it."""
    if os.geteuid() != 0:
        print("--setup needs root (apt-get install)", file=sys.stderr)
        return 1
    policy = Path("/usr/sbin/policy-rc.d")
    created = False
    if not policy.exists():  # deny service starts (nginx) during the install
        policy.write_text("#!/bin/sh\n# temporary, from pkgdepot bench/mirror_bench.py\n"
                          "exit 101\n")
        policy.chmod(0o755)
        created = True
    try:
        env = child_env(DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                        *SETUP_PACKAGES], check=True, env=env, timeout=1200)
    finally:
        if created:
            policy.unlink(missing_ok=True)
    print(tool_version(["aptly", "version"]))
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="500 packages, 10k-stanza index, 100 snapshots (~3 min)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mirror.json")
    ap.add_argument("--pkgdepot", default=str(REPO / ".venv" / "bin" / "pkgdepot"),
                    help="pkgdepot command (default .venv/bin/pkgdepot)")
    ap.add_argument("--no-aptly", action="store_true", help="pkgdepot only")
    ap.add_argument("--setup", action="store_true",
                    help="apt-get install aptly, nginx, dpkg-dev, apt-utils, gnupg, xz-utils, "
                         "faketime "
                         "and exit")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (debugging)")
    return ap.parse_args(argv)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so that every finally runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.setup:
        return setup()
    params = QUICK if args.quick else FULL
    missing = [t for t in ("nginx", "dpkg-deb", "apt-ftparchive", "gpg", "gpgv", "xz")
               if shutil.which(t) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)}; run: {sys.argv[0]} --setup",
              file=sys.stderr)
        return 2
    aptly_ok = not args.no_aptly and shutil.which("aptly") is not None
    tmp = Path(tempfile.mkdtemp(prefix="pkgdepot-mirror-bench-", dir="/tmp"))
    tmp.chmod(0o755)  # nginx workers (nobody) read the origin tree
    procs = Procs()
    key: GpgKey | None = None
    status = 0
    with interrupts_raise():
        try:
            set_build_cache_dir(tmp / "build-cache")
            key = make_gpg_key(tmp / "key", "pkgdepot bench")
            origin = Origin(tmp / "origin", tmp / "nginx", procs)
            (tmp / "origin").mkdir()
            origin.start()
            ctx = Ctx(params, tmp, procs, key, origin, args.pkgdepot, aptly_ok)
            if not aptly_ok:
                ctx.note("aptly not installed (run with --setup) or --no-aptly: "
                         "pkgdepot numbers only")
            meta = {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "quick": params.quick, "params": params.__dict__,
                "nproc": os.cpu_count(), "kernel": platform.release(),
                "python": platform.python_version(),
                "pkgdepot": tool_version([*args.pkgdepot.split(), "--version"]),
                "aptly": tool_version(["aptly", "version"]) if aptly_ok else None,
                "nginx": tool_version(["nginx", "-v"]),
                "loadavg_start": os.getloadavg(),
            }
            ctx.results["meta"] = meta
            for name, fn in (("mirror", bench_mirror), ("snapshots", bench_snapshots)):
                try:
                    ctx.results[name] = fn(ctx)
                except BenchError as e:
                    status = 1
                    ctx.note(f"{name}: failed: {e}")
                    traceback.print_exc()
            meta["loadavg_end"] = os.getloadavg()
            meta["seconds"] = time.monotonic() - T0
            ctx.results["notes"] = ctx.notes
            ctx.results["table"] = table_json(ctx.results)
            table = markdown(ctx.results)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(ctx.results, indent=1, default=str) + "\n")
            md = args.out.with_suffix(".md")
            md.write_text(table + "\n\n" + "".join(f"- {n}\n" for n in ctx.notes))
            print(table)
            if ctx.notes:
                print("\nNotes:")
                for n in ctx.notes:
                    print(f"- {n}")
            log(f"wrote {args.out} and {md} in {meta['seconds']:.0f} s")
        except KeyboardInterrupt:
            log("interrupted: cleaning up")
            status = 130
        finally:
            procs.stop_all()
            if key is not None:
                key.close()
            if args.keep_tmp:
                log(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
