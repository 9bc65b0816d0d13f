"""Hostile requests, sent as raw bytes (no client library normalizes them).
Every path probed lies inside the test's own temporary directory: the upstream
serves only tmp_path/www, and the depot's data directory is tmp_path/depot."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.depot import DepotProcess, free_port
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DepotProcess, Upstream,
                                                                    Path]]:
    tmp = tmp_path_factory.mktemp("hostile")
    www = tmp / "www"
    (www / "debian/pool/main/h/hello").mkdir(parents=True)
    (www / "debian/pool/main/h/hello/hello_1_all.deb").write_bytes(b"x" * 100)
    (www / "secret.txt").write_text("not for clients")
    with Upstream(www) as up:
        # No allow_networks: loopback upstreams are refused unless named in the config.
        cfg = f'[repos.deb]\nupstreams = ["{up.url}/debian"]\n'
        with DepotProcess(tmp / "depot", cfg) as depot:
            yield depot, up, tmp


def raw(depot: DepotProcess, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", depot.port), timeout=10) as s:
        s.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        try:
            s.settimeout(1)
            while chunk := s.recv(65536):
                buf += chunk
        except (TimeoutError, ConnectionError):
            pass
    status_line = buf.split(b"\r\n", 1)[0]
    parts = status_line.split()
    return (int(parts[1]) if len(parts) > 1 else 0), buf


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: depot\r\nConnection: close\r\n\r\n".encode()


@pytest.mark.parametrize("path", [
    "/deb/../secret.txt",
    "/deb/pool/../../secret.txt",
    "/deb/pool/%2e%2e/%2e%2e/secret.txt",
    "/deb/pool/%2E%2E%2F%2E%2E%2Fsecret.txt",
    "/deb/pool/..%5c..%5csecret.txt",
    "/deb//pool/main/h/hello/hello_1_all.deb",
    "/deb/pool/main/h/hello/hello_1_all.deb%00.txt",
    "/deb/./pool/main/h/hello/hello_1_all.deb",
    "//deb/pool/main/h/hello/hello_1_all.deb",
    "/deb/pool/main/h/hello/hello_1_all.deb%0d%0aX-Injected:%201",
])
def test_traversal_is_400(env: tuple[DepotProcess, Upstream, Path], path: str) -> None:
    depot, up, _ = env
    status, body = raw(depot, get(path))
    assert status == 400, body
    assert b"not for clients" not in body and b"X-Injected" not in body.split(b"\r\n\r\n")[0]
    assert not any(r.path.endswith("secret.txt") for r in up.log)


def test_nul_and_crlf_in_request_line(env: tuple[DepotProcess, Upstream, Path]) -> None:
    depot, _, _ = env
    status, _ = raw(depot, b"GET /deb/pool/x\x00.deb HTTP/1.1\r\nHost: d\r\n\r\n")
    assert 400 <= status < 500
    status, _ = raw(depot, b"GET /deb/pool/x\r.deb HTTP/1.1\r\nHost: d\r\n\r\n")
    assert 400 <= status < 500 or status == 0


@pytest.mark.parametrize("target", [
    "/127.0.0.1:{port}/debian/pool/main/h/hello/hello_1_all.deb",
    "/localhost:{port}/debian/pool/main/h/hello/hello_1_all.deb",
    "/169.254.169.254/latest/meta-data/x.deb",
    "/10.1.2.3/debian/pool/x.deb",
    "/[::1]:{port}/debian/pool/x.deb",
    "http://127.0.0.1:{port}/secret/x.deb",
    "http://169.254.169.254/x.deb",
    "http://[::ffff:127.0.0.1]:{port}/x.deb",
])
def test_internal_upstreams_refused(env: tuple[DepotProcess, Upstream, Path],
                                    target: str) -> None:
    depot, _up, _ = env
    other = free_port()  # a loopback service that is not a configured upstream
    status, body = raw(depot, get(target.format(port=other)))
    assert status == 403, body
    assert b"loopback, link-local or private" in body


def test_named_repo_on_loopback_is_allowed(env: tuple[DepotProcess, Upstream, Path]) -> None:
    depot, _, _ = env
    status, body = raw(depot, get("/deb/pool/main/h/hello/hello_1_all.deb"))
    assert status == 200 and body.endswith(b"x" * 100)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_write_methods_are_405(env: tuple[DepotProcess, Upstream, Path], method: str) -> None:
    depot, _, tmp = env
    req = (f"{method} /deb/pool/main/h/hello/hello_1_all.deb HTTP/1.1\r\nHost: d\r\n"
           "Content-Length: 5\r\nConnection: close\r\n\r\nevil!").encode()
    status, body = raw(depot, req)
    assert status == 405 and b"Allow: GET, HEAD" in body
    # nothing written: the store only holds what upstream served
    for blob in (tmp / "depot/data/blobs").rglob("*"):
        assert b"evil!" not in (blob.read_bytes() if blob.is_file() else b"")


def test_connect_refused_with_a_reason(env: tuple[DepotProcess, Upstream, Path]) -> None:
    depot, _, _ = env
    status, body = raw(depot, b"CONNECT mirror.example:443 HTTP/1.1\r\nHost: mirror.example:443"
                              b"\r\n\r\n")
    assert status == 403 and b"allow_connect" in body


def test_oversized_header(env: tuple[DepotProcess, Upstream, Path]) -> None:
    depot, _, _ = env
    req = (b"GET /deb/pool/main/h/hello/hello_1_all.deb HTTP/1.1\r\nHost: d\r\nX-Big: "
           + b"a" * 70000 + b"\r\n\r\n")
    status, _ = raw(depot, req)
    assert 400 <= status < 500


@pytest.mark.parametrize(("rng", "expected"), [("bytes=abc", 400), ("bytes=5-1", 400),
                                               ("bytes=1000-2000", 416)])
def test_malformed_range(env: tuple[DepotProcess, Upstream, Path], rng: str,
                         expected: int) -> None:
    depot, _, _ = env
    req = (f"GET /deb/pool/main/h/hello/hello_1_all.deb HTTP/1.1\r\nHost: d\r\nRange: {rng}\r\n"
           "Connection: close\r\n\r\n").encode()
    assert raw(depot, req)[0] == expected


def test_host_header_cannot_switch_repository(env: tuple[DepotProcess, Upstream, Path]) -> None:
    """Routing uses the request target only: a forged Host header changes nothing."""
    depot, _up, _ = env
    req = (b"GET /deb/pool/main/h/hello/hello_1_all.deb HTTP/1.1\r\n"
           b"Host: evil.example\r\nConnection: close\r\n\r\n")
    status, body = raw(depot, req)
    assert status == 200 and body.endswith(b"x" * 100)


def test_unknown_repo_and_unknown_paths(env: tuple[DepotProcess, Upstream, Path]) -> None:
    depot, _, _ = env
    status, body = raw(depot, get("/nosuch/dists/x/InRelease"))
    assert status == 404 and b"no repository named" in body
    status, body = raw(depot, get("/deb/secret.txt"))
    assert status == 403 and b"not an open proxy" in body
