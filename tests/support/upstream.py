"""An HTTP/1.1 file server on 127.0.0.1 to play a package archive's upstream in tests.

It serves the files under one directory (GET and HEAD; Content-Length, ETag,
Last-Modified, 304 on If-None-Match / If-Modified-Since, one-range Range requests with
If-Range, keep-alive), logs every request, and injects faults on chosen paths::

    with Upstream(tmp_path / "www") as up:
        up.cut("/dists/stable/InRelease", after=100, times=1)   # first request only
        up.slow(suffix(".deb"), bytes_per_second=50_000)
        ...
        assert up.count("/pool/main/h/hello/hello_1.0_all.deb") == 1

A path matcher is an exact request path ("/a/b", without query string), or any
callable taking the path and returning a bool (see :func:`suffix`, :func:`prefix`,
:func:`regex`). Each fault can be limited to the first ``times`` matching requests.

The server runs in a background thread (``ThreadingHTTPServer``), so the test can run
the depot and the clients as subprocesses. :meth:`Upstream.stop` closes the listening
socket *and* every open connection; :meth:`Upstream.start` again binds the same port.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import io
import re
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

__all__ = [
    "PathMatch",
    "RequestRecord",
    "Upstream",
    "prefix",
    "regex",
    "suffix",
]

PathMatch = str | Callable[[str], bool]

_INVERT = bytes(255 - i for i in range(256))


def suffix(s: str) -> Callable[[str], bool]:
    """Matcher: request paths ending with ``s``."""
    return lambda p: p.endswith(s)


def prefix(s: str) -> Callable[[str], bool]:
    """Matcher: request paths starting with ``s``."""
    return lambda p: p.startswith(s)


def regex(pattern: str) -> Callable[[str], bool]:
    """Matcher: request paths matching ``pattern`` (``re.search``)."""
    rx = re.compile(pattern)
    return lambda p: rx.search(p) is not None


@dataclass
class RequestRecord:
    """One request. It enters the log when its request line is read and is updated in
    place (status before the headers go out, bytes_sent before each body write), so a
    client that got a response always finds its record complete in the log."""

    method: str
    path: str  # decoded request path, without the query string
    headers: dict[str, str]  # request headers, names lower-cased
    time: float  # time.time() when the request line was read
    target: str = ""  # request target as sent (absolute-form when used as a proxy)
    status: int = 0  # 0 while no response has been started
    bytes_sent: int = 0  # body bytes written (0 for HEAD and 304)
    duration: float = 0.0  # seconds until the response was finished (or aborted)
    done: bool = False  # the handler is finished with it
    aborted: bool = False  # connection closed before the full body was sent
    faults: list[str] = field(default_factory=list)  # names of the faults applied

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class _Fault:
    kind: str
    match: PathMatch
    arg: Any = None
    times: int | None = None  # remaining applications; None = unlimited

    def matches(self, path: str) -> bool:
        if isinstance(self.match, str):
            return path == self.match
        return bool(self.match(path))


@dataclass
class _State:
    faults: list[_Fault] = field(default_factory=list)
    throttle: float | None = None  # bytes per second for every response body
    generators: list[tuple[str, Callable[[str], bytes | None]]] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

    upstream: Upstream

    def __init__(self, addr: tuple[str, int], upstream: Upstream) -> None:
        self.upstream = upstream
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        self.threads: set[threading.Thread] = set()
        super().__init__(addr, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.upstream.tls is not None:  # the handshake happens in the request's thread
            sock = self.upstream.tls.wrap_socket(sock, server_side=True,
                                                 do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conns_lock:
            self.conns.add(request)
        t = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self.conns_lock:
            self.threads.add(t)
        t.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.conns_lock:
                self.conns.discard(request)
                self.threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response are normal here; keep test output clean.
        pass

    def close_connections(self) -> None:
        with self.conns_lock:
            conns = list(self.conns)
        # shutdown() wakes the handler (reads see EOF, writes fail); the handler thread
        # then closes the socket itself (closing it here could race with fd reuse).
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def join_threads(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.conns_lock:
            threads = list(self.threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


class _Abort(Exception):
    """Raised inside a handler to drop the connection at once."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pkgdepot-test-upstream/1"
    sys_version = ""
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    # quiet
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    # --------------------------------------------------------------------------------------
    def _serve(self, head: bool) -> None:
        up = self.server.upstream
        started = time.time()
        t0 = time.monotonic()
        raw = self.path
        if raw.startswith(("http://", "https://")):  # absolute-form (proxy style)
            raw = urllib.parse.urlsplit(raw)._replace(scheme="", netloc="").geturl() or "/"
        path = urllib.parse.unquote(urllib.parse.urlsplit(raw).path) or "/"
        headers = {k.lower(): v for k, v in self.headers.items()}
        rec = RequestRecord(method=self.command, path=path, headers=headers, time=started,
                            target=self.path)
        self._rec = rec
        up._record(rec)
        aborted = False
        try:
            faults = up._take_faults(path)
            self._handle(up, path, head, headers, faults)
        except (_Abort, OSError):
            aborted = True
            self.close_connection = True
        finally:
            rec.duration = time.monotonic() - t0
            rec.aborted = aborted
            rec.done = True
            up._record_updated()
        if aborted:
            raise _Abort  # handled by socketserver: connection dropped

    def _simple(self, code: int, body: bytes = b"", extra: dict[str, str] | None = None,
                head: bool = False) -> None:
        self._rec.status = code
        self.send_response(code)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if code != 304:
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head and code != 304:
            self._rec.bytes_sent += len(body)
            self.wfile.write(body)

    def _handle(self, up: Upstream, path: str, head: bool, headers: dict[str, str],
                faults: list[_Fault]) -> None:
        kinds = {f.kind: f for f in faults}
        if "stall" in kinds:
            self._rec.faults.append("stall")
            if up._stopping.wait(float(kinds["stall"].arg)):
                raise _Abort
        if "status" in kinds:
            self._rec.faults.append("status")
            code = int(kinds["status"].arg)
            self._simple(code, f"{code} injected by test\n".encode(), head=head)
            return
        if "redirect" in kinds:
            self._rec.faults.append("redirect")
            self._simple(302, b"redirect\n", {"Location": str(kinds["redirect"].arg)}, head)
            return

        opened = self._open(up, path, kinds)
        if opened is None:
            self._simple(404, b"not found\n", head=head)
            return
        f, size, etag, mtime = opened
        with f:
            last_modified = email.utils.formatdate(mtime, usegmt=True)
            validators = {"ETag": etag, "Last-Modified": last_modified}

            inm = headers.get("if-none-match")
            ims = headers.get("if-modified-since")
            if inm is not None:
                tags = [t.strip() for t in inm.split(",")]
                if "*" in tags or etag in tags or f"W/{etag}" in tags:
                    self._simple(304, extra=validators)
                    return
            elif ims is not None:
                since = _parse_http_date(ims)
                if since is not None and mtime <= since:
                    self._simple(304, extra=validators)
                    return

            start, end = 0, size - 1
            status = 200
            rng = headers.get("range")
            if rng is not None and _if_range_ok(headers.get("if-range"), etag, mtime):
                parsed = _parse_range(rng, size)
                if isinstance(parsed, str):  # "unsatisfiable"
                    self._simple(416, b"range not satisfiable\n",
                                 {"Content-Range": f"bytes */{size}", **validators}, head)
                    return
                if parsed is not None:
                    start, end = parsed
                    status = 206
            length = max(0, end - start + 1)

            self._rec.status = status
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            lie = int(kinds["lie"].arg) if "lie" in kinds else 0
            if lie:
                self._rec.faults.append("lie")
            self.send_header("Content-Length", str(length + lie))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if head or length == 0:
                return
            self.wfile.flush()

            corrupt = "corrupt" in kinds
            cut_after: int | None = int(kinds["cut"].arg) if "cut" in kinds else None
            reset_after: int | None = int(kinds["reset"].arg) if "reset" in kinds else None
            stall_at: tuple[int, float] | None = kinds["stall_body"].arg if (
                "stall_body" in kinds) else None
            if reset_after is not None:
                cut_after = reset_after
            rate: float | None = None
            if "slow" in kinds:
                rate = float(kinds["slow"].arg)
            elif up._state.throttle:
                rate = up._state.throttle
            for k in ("corrupt", "cut", "slow", "reset", "stall_body"):
                if k in kinds:
                    self._rec.faults.append(k)
            chunk = 256 * 1024 if rate is None else max(1, min(64 * 1024, int(rate / 20)))

            f.seek(start)
            remaining = length
            t_start = time.monotonic()
            start_sent = self._rec.bytes_sent
            while remaining > 0:
                n = min(chunk, remaining)
                if stall_at is not None and self._rec.bytes_sent >= stall_at[0]:
                    self.wfile.flush()
                    if up._stopping.wait(stall_at[1]):
                        raise _Abort
                    stall_at = None
                if stall_at is not None:
                    n = min(n, stall_at[0] - self._rec.bytes_sent) or n
                if cut_after is not None:
                    n = min(n, cut_after - self._rec.bytes_sent)
                    if n <= 0:
                        self.wfile.flush()
                        if reset_after is not None:
                            self._reset()
                        raise _Abort
                data = f.read(n)
                if not data:  # file shrank under us
                    raise _Abort
                if corrupt:
                    data = data.translate(_INVERT)
                self._rec.bytes_sent += len(data)
                self.wfile.write(data)
                remaining -= len(data)
                if up._stopping.is_set():
                    raise _Abort
                if rate is not None:
                    due = t_start + (self._rec.bytes_sent - start_sent) / rate
                    delay = due - time.monotonic()
                    if delay > 0 and up._stopping.wait(delay):
                        raise _Abort
            if (cut_after is not None and self._rec.bytes_sent >= cut_after) or lie:
                # cut at or beyond the end, or a lying length: close, no keep-alive
                self.wfile.flush()
                raise _Abort

    def _open(self, up: Upstream, path: str, kinds: dict[str, _Fault]
              ) -> tuple[BinaryIO, int, str, int] | None:
        """The body to serve: (file, size, etag, mtime), or None for 404."""
        data: bytes | None = None
        if "replace" in kinds:
            self._rec.faults.append("replace")
            data = kinds["replace"].arg
        file = up._resolve(path) if data is None else None
        if data is None and file is None:
            data = up._generated(path)
        if data is not None:
            tag = hashlib.sha256(data).hexdigest()[:16]
            return io.BytesIO(data), len(data), f'"{tag}"', int(up._born)
        if file is None:
            return None
        try:
            st = file.stat()
            f = open(file, "rb")  # noqa: SIM115 - closed by the caller
        except OSError:
            return None
        return (f, st.st_size, f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"',
                int(st.st_mtime))

    def _reset(self) -> None:
        """Close with a TCP reset (RST) instead of an orderly FIN."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))


def _parse_http_date(value: str) -> int | None:
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _if_range_ok(if_range: str | None, etag: str, mtime: int) -> bool:
    if if_range is None:
        return True
    if if_range.startswith(('"', "W/")):
        return if_range == etag
    since = _parse_http_date(if_range)
    return since is not None and since >= mtime


def _parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range -> (start, end); "unsatisfiable"; None to ignore it."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # multiple ranges: answer with the full body (allowed by RFC 9110)
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return (max(0, size - n), size - 1)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return "unsatisfiable"
    return (start, min(end, size - 1))


class Upstream:
    """A file server on 127.0.0.1 for ``root``; see the module doc."""

    def __init__(self, root: Path, port: int = 0, throttle: float | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        """`tls`: a server context, to serve https."""
        self.root = Path(root).resolve()
        self.tls = tls
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._log: list[RequestRecord] = []
        self._log_lock = threading.Condition()
        self._state = _State(throttle=throttle)
        self._faults_lock = threading.Lock()
        self._stopping = threading.Event()
        self._born = time.time()

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("Upstream not started yet")
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Upstream:
        if self._server is not None:
            return self
        self._stopping.clear()
        deadline = time.monotonic() + 10
        while True:
            try:
                server = _Server(("127.0.0.1", self._port), self)
                break
            except OSError:
                if not self._port or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"upstream-{self._port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection (in-flight responses abort)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        server.join_threads(timeout=10)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- files --------------------------------------------------------------------------------
    def _resolve(self, path: str) -> Path | None:
        rel = path.lstrip("/")
        if "\x00" in rel:
            return None
        try:
            p = (self.root / rel).resolve()
        except (OSError, RuntimeError):
            return None
        if p != self.root and not p.is_relative_to(self.root):
            return None
        return p if p.is_file() else None

    def url_for(self, path: str) -> str:
        return f"{self.url}/{path.lstrip('/')}"

    # -- log ----------------------------------------------------------------------------------
    def _record(self, rec: RequestRecord) -> None:
        with self._log_lock:
            self._log.append(rec)
            self._log_lock.notify_all()

    def _record_updated(self) -> None:
        with self._log_lock:
            self._log_lock.notify_all()

    @property
    def log(self) -> list[RequestRecord]:
        """A snapshot (copy) of the request log, oldest first."""
        with self._log_lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    def records(self, path: PathMatch | None = None, method: str | None = "GET",
                status: int | None = None) -> list[RequestRecord]:
        out = []
        for r in self.log:
            if method is not None and r.method != method:
                continue
            if status is not None and r.status != status:
                continue
            if path is not None and not _match(path, r.path):
                continue
            out.append(r)
        return out

    def count(self, path: PathMatch | None = None, method: str | None = "GET",
              status: int | None = None) -> int:
        """Number of requests matching (``method=None``: any method). Requests still in
        flight count too (their status is 0 until the response starts)."""
        return len(self.records(path, method, status))

    def paths(self, method: str | None = "GET") -> list[str]:
        """Requested paths in order (with repeats)."""
        return [r.path for r in self.log if method is None or r.method == method]

    def bytes_sent(self, path: PathMatch | None = None) -> int:
        """Body bytes sent in total (for matching paths)."""
        return sum(r.bytes_sent for r in self.log if path is None or _match(path, r.path))

    def wait_for(self, predicate: Callable[[list[RequestRecord]], bool],
                 timeout: float = 10.0) -> bool:
        """Block until ``predicate(log)`` is true (checked after every request)."""
        deadline = time.monotonic() + timeout
        with self._log_lock:
            while not predicate(list(self._log)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._log_lock.wait(left)
            return True

    def in_flight(self) -> int:
        """Requests whose response is not finished yet."""
        return sum(1 for r in self.log if not r.done)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no request is in flight."""
        return self.wait_for(lambda log: all(r.done for r in log), timeout)

    # -- faults -------------------------------------------------------------------------------
    def _add(self, kind: str, match: PathMatch, arg: Any = None, times: int | None = None) -> None:
        with self._faults_lock:
            self._state.faults.append(_Fault(kind, match, arg, times))

    def _take_faults(self, path: str) -> list[_Fault]:
        """The faults applying to this request (first added wins per kind); uses up times."""
        out: dict[str, _Fault] = {}
        with self._faults_lock:
            for f in self._state.faults:
                if f.kind in out or not f.matches(path):
                    continue
                if f.times is not None:
                    if f.times <= 0:
                        continue
                    f.times -= 1
                out[f.kind] = f
            self._state.faults = [
                f for f in self._state.faults if f.times is None or f.times > 0
            ]
        return list(out.values())

    def corrupt(self, path: PathMatch, times: int | None = None) -> None:
        """Serve the right length, but every body byte inverted."""
        self._add("corrupt", path, None, times)

    def cut(self, path: PathMatch, after: int, times: int | None = None) -> None:
        """Send the full Content-Length header, then close after ``after`` body bytes."""
        self._add("cut", path, after, times)

    def stall(self, path: PathMatch, seconds: float, times: int | None = None) -> None:
        """Wait ``seconds`` before answering (interrupted by :meth:`stop`)."""
        self._add("stall", path, seconds, times)

    def slow(self, path: PathMatch, bytes_per_second: float, times: int | None = None) -> None:
        """Trickle the body at ``bytes_per_second``."""
        self._add("slow", path, bytes_per_second, times)

    def status(self, path: PathMatch, code: int, times: int | None = None) -> None:
        """Answer ``code`` (with a short text body) instead of the file."""
        self._add("status", path, code, times)

    def redirect(self, path: PathMatch, to_url: str, times: int | None = None) -> None:
        """Answer 302 with ``Location: to_url``."""
        self._add("redirect", path, to_url, times)

    def reset(self, path: PathMatch, after: int, times: int | None = None) -> None:
        """Send the full Content-Length header, then reset the connection (TCP RST)
        after ``after`` body bytes."""
        self._add("reset", path, after, times)

    def stall_body(self, path: PathMatch, after: int, seconds: float,
                   times: int | None = None) -> None:
        """Send ``after`` body bytes, then go silent for ``seconds`` (then go on)."""
        self._add("stall_body", path, (after, seconds), times)

    def lie_length(self, path: PathMatch, delta: int, times: int | None = None) -> None:
        """Announce a Content-Length ``delta`` bytes off (short < 0 < long), send the
        real body, then close the connection."""
        self._add("lie", path, delta, times)

    def replace(self, path: PathMatch, data: bytes, times: int | None = None) -> None:
        """Serve ``data`` (with its own, correct length) instead of the file."""
        self._add("replace", path, data, times)

    def generate(self, prefix: str, make: Callable[[str], bytes | None]) -> None:
        """Serve ``make(path)`` for paths under ``prefix`` that have no file (None:
        404): endless distinct files without writing them to disk."""
        self._state.generators.append((prefix, make))

    def _generated(self, path: str) -> bytes | None:
        for pre, make in self._state.generators:
            if path.startswith(pre):
                return make(path)
        return None

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._state.faults.clear()

    def set_throttle(self, bytes_per_second: float | None) -> None:
        """Rate-limit every response body (per connection); None to lift."""
        self._state.throttle = bytes_per_second or None

    def throttle_for(self, path: str, seconds: float) -> None:
        """Make ``path`` (a file under root) take about ``seconds`` to transfer."""
        size = (self.root / path.lstrip("/")).stat().st_size
        self.slow(path, max(1.0, size / seconds))


def _match(m: PathMatch, path: str) -> bool:
    return path == m if isinstance(m, str) else bool(m(path))


def http_date(when: datetime | float) -> str:
    ts = when.timestamp() if isinstance(when, datetime) else when
    return email.utils.formatdate(ts, usegmt=True)

