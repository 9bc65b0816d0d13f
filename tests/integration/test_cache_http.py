"""The cache over HTTP against a real upstream on 127.0.0.1 that logs every
request: single flight, verification, failures, freshness, Range, crashes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.depot import DepotProcess, free_port
from tests.support.upstream import Upstream

ALLOW_LOOPBACK = '[upstream]\nallow_networks = ["127.0.0.0/8"]\nread_timeout = 3\n'
DEB = "debian/pool/main/b/big/big_1.0_all.deb"
SMALL = "debian/pool/main/s/small/small_1.0_all.deb"
INRELEASE = "debian/dists/stable/InRelease"


def _write(root: Path, rel: str, data: bytes) -> bytes:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return data


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    _write(root, DEB, os.urandom(3 << 20))
    _write(root, SMALL, os.urandom(5000))
    _write(root, INRELEASE, b"Origin: test\nSuite: stable\n")
    return root


@pytest.fixture
def upstream(www: Path) -> Iterator[Upstream]:
    with Upstream(www) as up:
        yield up


@pytest.fixture(params=[1, 2], ids=["1-process", "2-workers"])
def depot(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DepotProcess]:
    """The depot as one process, and as a leader with a worker on the same port
    (every test below must hold for both: single flight, verification...)."""
    d = DepotProcess(tmp_path / "depot-a", f"[server]\nworkers = {request.param}\n"
                     + ALLOW_LOOPBACK + "[cache]\nrevalidate_after = 1\nnegative_ttl = 30\n")
    with d:
        yield d


def settled(upstream: Upstream, path: str, expected: int) -> int:
    """The upstream's count of finished requests for `path`, once it reaches
    `expected` (the log records a request when its response ends) or 5 s pass."""
    upstream.wait_for(lambda log: sum(1 for r in log if r.path == path) >= expected, 5)
    time.sleep(0.1)
    return upstream.count(path)


def stored(depot: DepotProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET once the depot has the file in its store: clients get a verified file
    before it is made durable and recorded, so the next request may still be
    served by the same download (a MISS that costs no upstream request)."""
    deadline = time.monotonic() + 10
    while True:
        status, headers, body = depot.get(path)
        if headers.get("X-Pkgdepot-Cache") != "MISS" or time.monotonic() > deadline:
            return status, headers, body
        time.sleep(0.05)


def via(upstream: Upstream, rel: str) -> str:
    """The /HOST:PORT/path form of an upstream file."""
    return f"/127.0.0.1:{upstream.port}/{rel}"


def test_miss_then_hit_all_forms(depot: DepotProcess, upstream: Upstream, www: Path) -> None:
    want = (www / SMALL).read_bytes()
    status, headers, body = depot.get(via(upstream, SMALL))
    assert (status, body, headers["X-Pkgdepot-Cache"]) == (200, want, "MISS")
    status, headers, body = stored(depot, via(upstream, SMALL))
    assert (status, body, headers["X-Pkgdepot-Cache"]) == (200, want, "HIT")
    # forward-proxy form shares the same cache entry
    conn = http.client.HTTPConnection("127.0.0.1", depot.port, timeout=10)
    conn.request("GET", f"http://127.0.0.1:{upstream.port}/{SMALL}")
    r = conn.getresponse()
    assert (r.status, r.read(), r.getheader("X-Pkgdepot-Cache")) == (200, want, "HIT")
    conn.close()
    assert settled(upstream, "/" + SMALL, 1) == 1


def test_twenty_concurrent_clients_one_transfer(depot: DepotProcess, upstream: Upstream,
                                                www: Path) -> None:
    want = hashlib.sha256((www / DEB).read_bytes()).hexdigest()
    upstream.throttle_for("/" + DEB, 2.0)  # so that the clients really overlap

    def fetch(_: int) -> tuple[int, str]:
        status, _h, body = depot.get(via(upstream, DEB), timeout=60)
        return status, hashlib.sha256(body).hexdigest()

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(fetch, range(20)))
    assert results == [(200, want)] * 20
    assert settled(upstream, "/" + DEB, 1) == 1
    assert upstream.bytes_sent("/" + DEB) == (www / DEB).stat().st_size


def test_late_joiner_and_disconnecting_client(depot: DepotProcess, upstream: Upstream,
                                              www: Path) -> None:
    """A client that hangs up mid-download cancels nothing; one that joins midway
    gets the whole file."""
    data = (www / DEB).read_bytes()
    upstream.throttle_for("/" + DEB, 2.0)
    s = socket.create_connection(("127.0.0.1", depot.port))
    s.sendall(f"GET {via(upstream, DEB)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.close()  # goes away mid-stream
    time.sleep(0.5)
    status, _h, body = depot.get(via(upstream, DEB), timeout=60)
    assert status == 200 and body == data
    assert settled(upstream, "/" + DEB, 1) == 1
    status, headers, body = stored(depot, via(upstream, DEB))
    assert headers["X-Pkgdepot-Cache"] == "HIT" and body == data
    # a client that resets its connection mid-hit (a small receive window, so
    # the depot is still sending) is routine: no error and no traceback logged
    for _ in range(4):  # both processes of the 2-worker depot likely get one
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", depot.port))
        s.sendall(f"GET {via(upstream, DEB)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        s.close()
    time.sleep(0.5)
    assert depot.get(via(upstream, DEB))[2] == data
    log = depot.log()
    assert "Error handling request" not in log and "Traceback" not in log, log[-3000:]


def _read_all(port: int, path: str) -> tuple[int, int, bytes, bool]:
    """(status, content-length, body, complete) reading raw until the peer closes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    try:
        body = r.read()
        return r.status, int(r.getheader("Content-Length") or -1), body, True
    except (http.client.IncompleteRead, ConnectionError) as e:
        partial = getattr(e, "partial", b"")
        return r.status, int(r.getheader("Content-Length") or -1), partial, False
    finally:
        conn.close()


def test_corrupt_body_is_rejected_then_good_one_kept(depot: DepotProcess, upstream: Upstream,
                                                     www: Path) -> None:
    """A by-hash file whose body does not match its name: every client's connection
    is reset before the last byte (never a wrong file served as complete), nothing
    is stored, and once upstream is fixed the good file is fetched and kept. (Six
    clients at once: with two processes, the worker's clients follow the leader's
    download from its file, and must be cut off too.)"""
    data = os.urandom(2_000_000)
    digest = hashlib.sha256(data).hexdigest()
    rel = f"debian/dists/stable/main/binary-amd64/by-hash/SHA256/{digest}"
    _write(www, rel, data)
    upstream.corrupt("/" + rel)
    upstream.throttle_for("/" + rel, 1.0)  # so that the clients overlap
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: _read_all(depot.port, via(upstream, rel)), range(6)))
    for status, length, body, complete in results:
        assert status == 200 and length == len(data)
        assert not complete and len(body) < len(data)
    assert "not kept" in depot.log()
    upstream.clear_faults()
    status, length, body, complete = _read_all(depot.port, via(upstream, rel))
    assert complete and body == data
    status, headers, body = stored(depot, via(upstream, rel))
    assert headers["X-Pkgdepot-Cache"] == "HIT" and body == data
    assert settled(upstream, "/" + rel, 2) == 2


def test_a_second_depot_on_the_same_port_is_refused(depot: DepotProcess, upstream: Upstream,
                                                   tmp_path: Path, www: Path) -> None:
    """Processes of one depot share its port (SO_REUSEPORT); another depot started
    on that port by mistake must not be let in to take half of the clients."""
    # the depot says it listens once all its processes do
    n = 2 if "workers = 2" in depot.config_path.read_text() else 1
    assert f"({n} process" in depot.log()
    other = DepotProcess(tmp_path / "depot-b", "[server]\nworkers = 2\n" + ALLOW_LOOPBACK,
                         port=depot.port)
    try:
        with contextlib.suppress(RuntimeError):  # it exits, or the first depot answers first
            other.start()
        assert other.proc is not None
        assert other.proc.wait(30) != 0
        assert "cannot listen on" in other.log() and "another depot" in other.log()
    finally:
        other.stop()  # whatever happened
    # the first depot still answers every client
    for _ in range(8):
        assert depot.get(via(upstream, SMALL))[2] == (www / SMALL).read_bytes()


def test_connection_cut_mid_body(depot: DepotProcess, upstream: Upstream, www: Path) -> None:
    data = (www / DEB).read_bytes()
    upstream.cut("/" + DEB, after=100_000, times=1)
    status, length, body, complete = _read_all(depot.port, via(upstream, DEB))
    # the client sees an error: a reset mid-body, or a 502 if the cut came first
    assert (status == 200 and not complete and len(body) < length) or status == 502
    status, _h, body = depot.get(via(upstream, DEB))
    assert status == 200 and body == data
    assert settled(upstream, "/" + DEB, 2) == 2


def test_ranges(depot: DepotProcess, upstream: Upstream, www: Path) -> None:
    data = (www / DEB).read_bytes()
    # a range of a file still downloading, served once the range has arrived
    upstream.throttle_for("/" + DEB, 3.0)
    t0 = time.monotonic()
    status, headers, body = depot.get(via(upstream, DEB), {"Range": "bytes=0-999"})
    assert status == 206 and body == data[:1000]
    assert headers["Content-Range"] == f"bytes 0-999/{len(data)}"
    assert time.monotonic() - t0 < 2.5
    status, headers, body = depot.get(via(upstream, DEB))  # waits for the rest
    assert status == 200 and body == data
    # cached: single, suffix and multi-range
    status, headers, body = depot.get(via(upstream, DEB), {"Range": "bytes=-10"})
    assert (status, body) == (206, data[-10:])
    status, headers, body = depot.get(via(upstream, DEB), {"Range": "bytes=0-4,100-104"})
    assert status == 206 and headers["Content-Type"].startswith("multipart/byteranges")
    assert int(headers["Content-Length"]) == len(body)
    assert data[0:5] in body and data[100:105] in body and body.count(b"Content-Range") == 2
    status, _h, _b = depot.get(via(upstream, DEB), {"Range": f"bytes={len(data)}-"})
    assert status == 416
    status, _h, _b = depot.get(via(upstream, DEB), {"Range": "bytes=5-1"})
    assert status == 400
    assert settled(upstream, "/" + DEB, 1) == 1


def test_conditional_requests(depot: DepotProcess, upstream: Upstream) -> None:
    depot.get(via(upstream, SMALL))
    _status, headers, _b = stored(depot, via(upstream, SMALL))
    etag, lm = headers["ETag"], headers["Last-Modified"]
    assert depot.get(via(upstream, SMALL), {"If-None-Match": etag})[0] == 304
    assert depot.get(via(upstream, SMALL), {"If-Modified-Since": lm})[0] == 304
    assert depot.get(via(upstream, SMALL), {"If-None-Match": '"other"'})[0] == 200


def test_volatile_revalidation_and_stale(depot: DepotProcess, upstream: Upstream,
                                         www: Path) -> None:
    path = via(upstream, INRELEASE)
    assert depot.get(path)[2] == b"Origin: test\nSuite: stable\n"
    # inside the coalescing window: no upstream request at all
    for _ in range(5):
        assert depot.get(path)[1]["X-Pkgdepot-Cache"] == "HIT"
    assert settled(upstream, "/" + INRELEASE, 1) == 1
    time.sleep(1.2)
    status, headers, _b = depot.get(path)
    assert headers["X-Pkgdepot-Cache"] == "REVALIDATED"
    last = upstream.records("/" + INRELEASE)[-1]
    assert last.status == 304 and (last.header("if-none-match") or last.header(
        "if-modified-since"))
    # upstream publishes something new: it is fetched
    time.sleep(1.2)
    _write(www, INRELEASE, b"Origin: test\nSuite: stable\nVersion: 2\n")
    os.utime(www / INRELEASE, (time.time() + 5, time.time() + 5))
    assert depot.get(path)[2].endswith(b"Version: 2\n")
    # upstream goes away: the stale copy is served, with a warning
    upstream.stop()
    time.sleep(1.2)
    status, headers, body = depot.get(path)
    assert status == 200 and body.endswith(b"Version: 2\n")
    assert headers["X-Pkgdepot-Cache"] == "STALE" and "stale" in headers["Warning"]


def test_upstream_errors(depot: DepotProcess, upstream: Upstream) -> None:
    missing = via(upstream, "debian/pool/main/n/no/no_1_all.deb")
    assert depot.get(missing)[0] == 404
    assert depot.get(missing)[0] == 404
    assert upstream.count("/debian/pool/main/n/no/no_1_all.deb") == 1  # remembered
    upstream.status("/" + SMALL, 503)
    status, _h, body = depot.get(via(upstream, SMALL))
    assert status == 502 and b"503" in body
    upstream.clear_faults()
    upstream.stall("/" + DEB, 10)
    status, _h, body = depot.get(via(upstream, DEB))
    assert status in (502, 504) and b"127.0.0.1" in body
    upstream.clear_faults()
    dead = free_port()
    status, _h, body = depot.get(f"/127.0.0.1:{dead}/{SMALL}")
    assert status == 502 and str(dead).encode() in body


def test_failover_and_redirects(tmp_path: Path, upstream: Upstream, www: Path) -> None:
    dead = free_port()
    cfg = (f'[repos.deb]\nupstreams = ["http://127.0.0.1:{dead}/debian", '
           f'"{upstream.url}/debian"]\n')
    with DepotProcess(tmp_path / "d", cfg) as d:
        status, _h, body = d.get("/deb/pool/main/s/small/small_1.0_all.deb")
        assert status == 200 and body == (www / SMALL).read_bytes()
        # a redirecting mirror: followed, cached under the requested URL
        _write(www, "elsewhere/x_1_all.deb", b"moved")
        upstream.redirect("/debian/pool/main/x/x/x_1_all.deb",
                          upstream.url + "/elsewhere/x_1_all.deb")
        assert d.get("/deb/pool/main/x/x/x_1_all.deb")[2] == b"moved"
        status, headers, body = stored(d, "/deb/pool/main/x/x/x_1_all.deb")
        assert headers["X-Pkgdepot-Cache"] == "HIT" and body == b"moved"


def test_sigkill_during_downloads_then_restart(depot: DepotProcess, upstream: Upstream,
                                               www: Path) -> None:
    data = (www / DEB).read_bytes()
    upstream.throttle_for("/" + DEB, 4.0)
    s = socket.create_connection(("127.0.0.1", depot.port))
    s.sendall(f"GET {via(upstream, DEB)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.recv(65536)
    time.sleep(1.0)
    tmp_files = list((depot.data_dir / "tmp").iterdir())
    assert tmp_files, "a download should be in progress"
    depot.kill()
    s.close()
    upstream.clear_faults()
    upstream.set_throttle(None)
    depot.start()
    assert not list((depot.data_dir / "tmp").iterdir())  # cleaned at start
    status, headers, body = depot.get(via(upstream, DEB))
    assert status == 200 and headers["X-Pkgdepot-Cache"] == "MISS" and body == data
    # every blob in the store is intact
    for blob in (depot.data_dir / "blobs").rglob("*"):
        if blob.is_file():
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_keep_alive_and_pipelining(depot: DepotProcess, upstream: Upstream, www: Path) -> None:
    want = (www / SMALL).read_bytes()
    depot.get(via(upstream, SMALL))
    s = socket.create_connection(("127.0.0.1", depot.port), timeout=10)
    req = f"GET {via(upstream, SMALL)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    s.sendall(req * 3)  # pipelined, as apt does
    buf = b""
    while buf.count(want) < 3:
        chunk = s.recv(1 << 16)
        assert chunk, "connection closed early"
        buf += chunk
    assert buf.count(b"HTTP/1.1 200 OK") == 3
    s.close()


def test_burst_of_clients_shares_one_revalidation(depot: DepotProcess, upstream: Upstream) -> None:
    path = via(upstream, INRELEASE)
    depot.get(path)
    upstream.stall("/" + INRELEASE, 0.5)  # keep the check in flight while the burst arrives
    time.sleep(1.2)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: depot.get(path), range(20)))
    assert all(r[0] == 200 and r[2] == b"Origin: test\nSuite: stable\n" for r in results)
    assert settled(upstream, "/" + INRELEASE, 2) == 2  # the first fetch and one check


def test_allowed_connect_tunnels_and_caches_nothing(tmp_path: Path, upstream: Upstream,
                                                   www: Path) -> None:
    cfg = ALLOW_LOOPBACK + f'allow_connect = ["127.0.0.1:{upstream.port}"]\n'
    with DepotProcess(tmp_path / "d", cfg) as d:
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        s.sendall(f"CONNECT 127.0.0.1:{upstream.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(4096) == b"HTTP/1.1 200 Connection established\r\n\r\n"
        s.sendall(f"GET /{SMALL} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
        s.close()
        assert buf.startswith(b"HTTP/1.") and buf.endswith((www / SMALL).read_bytes())
        assert not [p for p in (d.data_dir / "blobs").rglob("*") if p.is_file()]


def test_a_burst_of_small_misses_is_kept_promptly(depot: DepotProcess, upstream: Upstream,
                                                  www: Path) -> None:
    """300 distinct small files missed by 16 clients at once: each client gets
    its file, and within seconds every one is in the store and no download is
    left holding its body (small bodies are kept in memory until stored: a
    store that fell behind would keep them all, and serve them from there)."""
    names = [f"debian/pool/main/b/burst/burst{i}_1.0_all.deb" for i in range(300)]
    want = {n: hashlib.sha256(_write(www, n, os.urandom(3000 + i))).hexdigest()
            for i, n in enumerate(names)}

    def get(name: str) -> str:
        status, _h, body = depot.get(via(upstream, name))
        assert status == 200
        return hashlib.sha256(body).hexdigest()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = dict(zip(names, pool.map(get, names), strict=True))
    assert got == want
    deadline = time.monotonic() + 10
    while True:
        status = json.loads(depot.get("/_pkgdepot/status.json")[2])
        if not status["in_flight"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status["in_flight"] == [], status["in_flight"][:5]
    hits = {n: depot.get(via(upstream, n))[1]["X-Pkgdepot-Cache"] for n in names[::30]}
    assert set(hits.values()) == {"HIT"}, hits
    assert settled(upstream, "/" + names[0], 1) == 1
