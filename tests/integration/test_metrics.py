"""Prometheus metrics and logs of a real depot after known traffic: exact
counts whether one process or a leader and a worker answer, access-log lines
that carry the cache result, JSON logs that parse."""

from __future__ import annotations

import http.client
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.depot import DepotProcess
from tests.support.upstream import Upstream

SMALL = "debian/pool/main/s/small/small_1.0_all.deb"
BROKEN = "debian/pool/main/b/broken/broken_1.0_all.deb"
BY_HASH = "debian/dists/stable/main/binary-amd64/by-hash/SHA256/" + "ab" * 32
ALLOW_LOOPBACK = '[upstream]\nallow_networks = ["127.0.0.0/8"]\nread_timeout = 3\n'
SAMPLE_RE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)')
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
COMBINED_RE = re.compile(
    r'(?P<remote>\S+) - - \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
    r'"(?P<method>\S+) (?P<target>\S+) (?P<proto>HTTP/\d\.\d)" (?P<status>\d{3}) '
    r'(?P<bytes>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" (?P<result>\S+)')

Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    for rel, size in ((SMALL, 5000), (BROKEN, 10), (BY_HASH, 3000)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(size))
    return root


@pytest.fixture
def upstream(www: Path) -> Iterator[Upstream]:
    with Upstream(www) as up:
        yield up


def scrape(depot: DepotProcess) -> Scrape:
    status, headers, body = depot.get("/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: Scrape = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.fullmatch(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        out[(m.group(1), frozenset(LABEL_RE.findall(m.group(2) or "")))] = float(m.group(3))
    return out


def metric(scraped: Scrape, name: str, **labels: str) -> float:
    return scraped[(name, frozenset(labels.items()))]


def idle(depot: DepotProcess) -> Scrape:
    """A scrape once no download runs (the file is in the store, so that the
    next request is a hit and not a second client of the same download)."""
    deadline = time.monotonic() + 10
    while True:
        scraped = scrape(depot)
        if metric(scraped, "pkgdepot_downloads_in_flight") == 0 or time.monotonic() > deadline:
            return scraped
        time.sleep(0.05)


def all_answering(depot: DepotProcess, processes: int) -> None:
    """Wait until every process serves (a worker starts a moment after the leader)."""
    deadline = time.monotonic() + 20
    while json.loads(depot.get("/_pkgdepot/status.json")[2])["processes"] < processes:
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.1)


def head(depot: DepotProcess, path: str) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", depot.port, timeout=10)
    try:
        conn.request("HEAD", path)
        r = conn.getresponse()
        r.read()
        return r.getheader("X-Pkgdepot-Cache")
    finally:
        conn.close()


def get_aborted(depot: DepotProcess, path: str) -> bool:
    """GET a file whose download fails verification: the depot resets the
    connection before the last byte. True if the body came short."""
    conn = http.client.HTTPConnection("127.0.0.1", depot.port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        length = int(r.getheader("Content-Length") or 0)
        try:
            return len(r.read()) < length
        except (http.client.IncompleteRead, ConnectionError):
            return True
    finally:
        conn.close()


def log_lines(path: Path, want: int, timeout: float = 10) -> list[str]:
    """The access log once it has `want` lines (it is written within a second)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= want or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


@pytest.mark.parametrize("workers", [1, 2], ids=["1-process", "2-workers"])
def test_exact_counts_and_access_log(tmp_path: Path, upstream: Upstream, www: Path,
                                     workers: int) -> None:
    access = tmp_path / "logs" / "access.log"
    cfg = (f'[server]\nworkers = {workers}\naccess_log = "{access}"\n' + ALLOW_LOOPBACK)
    host = f"127.0.0.1:{upstream.port}"
    size = (www / SMALL).stat().st_size
    with DepotProcess(tmp_path / "depot", cfg) as depot:
        all_answering(depot, workers)
        status, headers, _ = depot.get(f"/{host}/{SMALL}")
        assert (status, headers["X-Pkgdepot-Cache"]) == (200, "MISS")
        idle(depot)
        for _ in range(20):  # one connection each: both processes answer some
            status, headers, body = depot.get(f"/{host}/{SMALL}")
            assert (status, headers["X-Pkgdepot-Cache"], len(body)) == (200, "HIT", size)
        assert head(depot, f"/{host}/{SMALL}") == "HIT"          # a hit that sends no body
        upstream.status("/" + BROKEN, 500)
        assert depot.get(f"/{host}/{BROKEN}")[0] == 502          # upstream error
        assert depot.get(f"/{host}/debian/notes.txt")[0] == 403  # refused: no repository
        upstream.corrupt("/" + BY_HASH)
        assert get_aborted(depot, f"/{host}/{BY_HASH}")          # fails verification
        scraped = idle(depot)
        # every scrape agrees, whichever process answers it
        assert all(scrape(depot) == scraped for _ in range(4))
        status_json = json.loads(depot.get("/_pkgdepot/status.json")[2])

    def count(result: str, repo: str = host) -> float:
        return metric(scraped, "pkgdepot_requests_total", repo=repo, result=result)

    assert {r: count(r) for r in ("hit", "miss", "revalidated", "stale", "error")} == {
        "hit": 21, "miss": 1, "revalidated": 0, "stale": 0, "error": 2}
    assert count("error", "-") == 1
    assert metric(scraped, "pkgdepot_sent_bytes_total", repo=host, source="cache") == 20 * size
    # the client of the bad download got all but its last byte, then a reset
    assert metric(scraped, "pkgdepot_sent_bytes_total", repo=host, source="upstream") == (
        size + (www / BY_HASH).stat().st_size - 1)
    fetched = metric(scraped, "pkgdepot_upstream_fetched_bytes_total", repo=host)
    assert fetched == size + (www / BY_HASH).stat().st_size
    base = f"http://{host}"
    assert metric(scraped, "pkgdepot_upstream_requests_total", upstream=base, outcome="ok") == 2
    assert metric(scraped, "pkgdepot_upstream_requests_total", upstream=base,
                  outcome="failed") == 1
    assert metric(scraped, "pkgdepot_upstream_latency_seconds_count", upstream=base) == 3
    assert metric(scraped, "pkgdepot_upstream_latency_seconds_bucket", upstream=base,
                  le="+Inf") == 3
    assert metric(scraped, "pkgdepot_verification_failures_total") == 1
    assert metric(scraped, "pkgdepot_store_bytes") == size     # nothing else was kept
    assert metric(scraped, "pkgdepot_store_files") == 1
    assert metric(scraped, "pkgdepot_store_limit_bytes") == 0
    assert metric(scraped, "pkgdepot_processes") == workers
    per_process = status_json["requests_per_process"]
    assert len(per_process) == workers and sum(per_process) == 25
    if workers == 2:
        assert all(n > 0 for n in per_process), per_process  # the sum really spans both

    lines = log_lines(access, 25 + 5 + 2)  # traffic, scrapes, status.json twice at least
    parsed = [COMBINED_RE.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m]
    by_target = Counter((m["method"], m["target"], m["status"], m["bytes"], m["result"])
                        for m in parsed if m)
    assert by_target[("GET", f"/{host}/{SMALL}", "200", str(size), "miss")] == 1
    assert by_target[("GET", f"/{host}/{SMALL}", "200", str(size), "hit")] == 20
    assert by_target[("HEAD", f"/{host}/{SMALL}", "200", "-", "hit")] == 1
    assert [(m["status"], m["result"]) for m in parsed
            if m and m["target"] == f"/{host}/{BROKEN}"] == [("502", "error")]
    assert sum(1 for m in parsed if m and m["target"] == "/metrics" and m["result"] == "-") >= 5
    assert all(m and m["remote"] == "127.0.0.1" and m["proto"] == "HTTP/1.1" for m in parsed)
    assert {m["agent"] for m in parsed if m and m["method"] == "GET"} == {
        f"Python-urllib/{sys.version_info.major}.{sys.version_info.minor}"} | (
        {"-"} if any(m and m["target"] == f"/{host}/{BY_HASH}" for m in parsed) else set())


def test_json_logs(tmp_path: Path, upstream: Upstream, www: Path) -> None:
    cfg = '[server]\naccess_log = "-"\nlog_format = "json"\n' + ALLOW_LOOPBACK
    host = f"127.0.0.1:{upstream.port}"
    depot = DepotProcess(tmp_path / "depot", cfg)
    with depot:
        assert depot.get(f"/{host}/{SMALL}")[1]["X-Pkgdepot-Cache"] == "MISS"
        upstream.status("/" + BROKEN, 500)
        assert depot.get(f"/{host}/{BROKEN}")[0] == 502
    lines = [line for line in depot.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, server log included
    access = [r for r in records if "result" in r]
    # the test's own requests, in any order: each process of the depot (start-up
    # polls "/" too) writes its lines out up to a second later, on its own
    ours = sorted((r for r in access if r["target"] != "/"), key=lambda r: r["target"],
                  reverse=True)
    assert [(r["method"], r["target"], r["status"], r["result"]) for r in ours] == [
        ("GET", f"/{host}/{SMALL}", 200, "miss"), ("GET", f"/{host}/{BROKEN}", 502, "error")]
    assert ours[0]["bytes"] == (www / SMALL).stat().st_size
    assert all(r["remote"] == "127.0.0.1" and r["duration_ms"] >= 0 for r in access)
    server_log = [r for r in records if "level" in r]
    assert any(r["level"] == "info" and "listening" in r["message"] for r in server_log)
    assert any(r["level"] == "warning" and "500" in r["message"] for r in server_log)
