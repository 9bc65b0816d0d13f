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


# -- no open proxy under any URL form ---------------------------------------

@pytest.fixture(scope="module")
def inner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A service on the depot host's loopback that is NOT a configured upstream:
    no URL form may make the depot reach it."""
    www = tmp_path_factory.mktemp("inner")
    (www / "x.deb").write_bytes(b"INNER-SECRET")
    with Upstream(www) as up:
        yield up


@pytest.mark.parametrize("target", [
    "http://2130706433:{p}/x.deb", "http://0x7f.1:{p}/x.deb", "http://0177.0.0.1:{p}/x.deb",
    "http://127.1:{p}/x.deb", "http://0x7f000001:{p}/x.deb", "http://0:{p}/x.deb",
    "http://LOCALHOST:{p}/x.deb", "/2130706433:{p}/x.deb", "/0x7f.1:{p}/x.deb",
    "/127.1:{p}/x.deb", "/127.0.0.1:0{p}/x.deb", "/%31%32%37.0.0.1:{p}/x.deb",
    "http://[::1]:{p}/x.deb", "http://[0:0:0:0:0:0:0:1]:{p}/x.deb",
    "http://[::ffff:7f00:1]:{p}/x.deb", "http://[::ffff:127.0.0.1]:{p}/x.deb",
    "http://[fe80::1%25lo]:{p}/x.deb", "http://user@127.0.0.1:{p}/x.deb",
    "http://mirror.example@127.0.0.1:{p}/x.deb", "http://127.0.0.1:{p}@mirror.example/x.deb",
    "/user@127.0.0.1:{p}/x.deb", "http://%31%32%37.0.0.1:{p}/x.deb",
    "http://localhost.:{p}/x.deb", "/localhost.:{p}/x.deb", "http://127.0.0.1.:{p}/x.deb",
    "http://127.0.0.1:{p}:80/x.deb", "http://169.254.169.254./x.deb",
    "http://169.254.169.254/latest/meta-data/x.deb", "http://[fd00::1]/x.deb",
    "https://127.0.0.1:{p}/x.deb", "http://127.0.0.1/x.deb", "HTTP://127.0.0.1:{p}/x.deb",
    "//127.0.0.1:{p}/x.deb", "/127.0.0.1%3a{p}/x.deb",
])
def test_no_url_form_reaches_the_host(env: tuple[DepotProcess, Upstream, Path],
                                      inner: Upstream, target: str) -> None:
    """Decimal, octal, hex and short IPv4, IPv6 literals (mapped, expanded,
    scoped), user info, percent-encoded and trailing-dot hosts, odd ports:
    refused with 400, 403 or 404, and the inner service never sees a request."""
    depot, _up, _ = env
    port = inner.url.rsplit(":", 1)[1]
    status, body = raw(depot, get(target.format(p=port)))
    assert status in (400, 403, 404), body
    assert b"INNER-SECRET" not in body
    assert inner.log == []


@pytest.mark.parametrize("authority", ["127.0.0.1:{p}", "[::1]:{p}", "localhost:{p}",
                                       "2130706433:{p}", "169.254.169.254:80", "0x7f.1:{p}"])
def test_connect_to_the_host_refused(env: tuple[DepotProcess, Upstream, Path], inner: Upstream,
                                     authority: str) -> None:
    depot, _, _ = env
    a = authority.format(p=inner.url.rsplit(":", 1)[1])
    status, _body = raw(depot, f"CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
    assert status in (400, 403)
    assert inner.log == []


@pytest.mark.parametrize("target", [
    "/deb/dists/x/metalink?a=%0d%0aX-Injected:%201",
    "/deb/dists/x/metalink?a=%0aX-Injected:%201",
    "/deb/pool/main/h/hello/hello_1_all.deb%0aX-Injected:%201",
    "/deb/pool/main/h/hello/hello_1_all.deb%00%0d%0aX-Injected:%201",
    "http://127.0.0.1:{up}/debian/pool/x%0d%0aX-Injected:%201.deb",
    "/deb/pool/main/h/hello/hello_1_all.deb?%0d%0aX-Injected:%201",
])
def test_crlf_and_nul_cannot_inject_headers(env: tuple[DepotProcess, Upstream, Path],
                                            target: str) -> None:
    """Encoded CR, LF and NUL anywhere in the target: 400 before anything goes
    upstream; neither the response nor any upstream request carries the header."""
    depot, up, _ = env
    before = len(up.log)
    status, resp = raw(depot, get(target.format(up=up.url.rsplit(":", 1)[1])))
    assert status == 400, resp
    assert b"X-Injected" not in resp.split(b"\r\n\r\n", 1)[0]
    assert all("x-injected" not in r.headers for r in up.log[before:])
    assert len(up.log) == before


# -- the Host header cannot make one repository's cache answer for another ----

DEB = "pool/main/h/hello/hello_1_all.deb"


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DepotProcess, Upstream,
                                                                    Upstream]]:
    tmp = tmp_path_factory.mktemp("two")
    ups = []
    for name in ("a", "b"):
        (tmp / name / "debian" / DEB).parent.mkdir(parents=True)
        (tmp / name / "debian" / DEB).write_bytes(f"CONTENT-{name.upper()}".encode() * 10)
    with Upstream(tmp / "a") as ua, Upstream(tmp / "b") as ub:
        ups = [ua, ub]
        cfg = "".join(f'[repos.{n}]\nupstreams = ["{u.url}/debian"]\n'
                      for n, u in zip("ab", ups, strict=True))
        with DepotProcess(tmp / "depot", cfg) as depot:
            yield depot, ua, ub


def _get(depot: DepotProcess, target: str, host: str) -> bytes:
    status, body = raw(depot, f"GET {target} HTTP/1.1\r\nHost: {host}\r\n"
                              "Connection: close\r\n\r\n".encode())
    assert status == 200, body
    return body.split(b"\r\n\r\n", 1)[1]


def test_host_header_cannot_poison(two: tuple[DepotProcess, Upstream, Upstream]) -> None:
    """Every form names its repository by the request target alone: a forged
    Host (the other repository's name, its upstream, the depot itself), an
    absolute URI whose host disagrees with Host, or the other upstream in the
    path never makes A's cache answer for B or the reverse, first fetch or hit."""
    depot, ua, ub = two
    a_auth, b_auth = ua.url.split("//", 1)[1], ub.url.split("//", 1)[1]
    d_auth = f"127.0.0.1:{depot.port}"
    a, b = b"CONTENT-A" * 10, b"CONTENT-B" * 10
    for _round in range(2):  # first: misses that fill the cache; then: hits
        assert _get(depot, f"/a/{DEB}", "b") == a
        assert _get(depot, f"/b/{DEB}", a_auth) == b
        assert _get(depot, f"http://{a_auth}/debian/{DEB}", b_auth) == a
        assert _get(depot, f"http://{b_auth}/debian/{DEB}", a_auth) == b
        assert _get(depot, f"http://{d_auth}/a/{DEB}", b_auth) == a
        assert _get(depot, f"http://localhost:{depot.port}/b/{DEB}", d_auth) == b
        assert _get(depot, f"/{b_auth}/debian/{DEB}", a_auth) == b
        assert _get(depot, f"/{a_auth}/debian/{DEB}", "evil.example") == a
    # each upstream was asked once, for its own file only
    assert [r.path for r in ua.log] == [f"/debian/{DEB}"]
    assert [r.path for r in ub.log] == [f"/debian/{DEB}"]
