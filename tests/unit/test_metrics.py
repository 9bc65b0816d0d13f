"""Counters, their merge over processes, the Prometheus text, and access-log
lines, without a server."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from pkgdepot.errors import ConfigError
from pkgdepot.logs import AccessLog
from pkgdepot.metrics import (
    BYTES_CACHE,
    BYTES_UPSTREAM,
    MAX_ORIGINS,
    OTHER,
    Counters,
    Stats,
    merge_counts,
    render_prometheus,
)

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


def test_counts_by_origin_and_result() -> None:
    c = Counters()
    c.served("deb", "MISS", 100)
    c.served("deb", "HIT", 100)
    c.served("deb", "MIRROR", 50)       # from the store: a hit
    c.served("deb", "REVALIDATED", 7)
    c.served("deb", "STALE", 3)
    c.error("deb")
    c.served("deb", "MISS", 40)
    c.aborted("deb", 15)                # its download failed: 25 bytes were sent
    assert c.by_origin["deb"] == [2, 1, 1, 1, 2, 160, 125]


def test_origins_are_bounded() -> None:
    c = Counters()
    for i in range(MAX_ORIGINS + 10):
        c.served(f"host{i}.example", "HIT", 1)
    assert len(c.by_origin) == MAX_ORIGINS + 1
    assert c.by_origin[OTHER][0] == 10


def test_series_per_minute_and_merge() -> None:
    a, b = Counters(), Counters()
    a.mark_minute(T0)
    a.served("deb", "HIT", 10)
    a.mark_minute(T0 + 60, fetched=0)
    a.served("deb", "MISS", 5)
    b.mark_minute(T0 + 61)             # a worker that started a minute later
    b.served("deb", "HIT", 1)
    sa, sb = a.export(T0 + 70, fetched=5), b.export(T0 + 70)
    minute = int(T0 // 60)
    assert sa["series"] == [[minute, [1, 0, 0, 0, 0, 10, 0, 0]],
                            [minute + 1, [0, 1, 0, 0, 0, 0, 5, 5]]]
    merged = merge_counts([json.loads(json.dumps(sa)), sb])  # as it travels between processes
    assert merged["origins"] == {"deb": [2, 1, 0, 0, 0, 11, 5]}
    assert merged["series"] == [(minute, [1, 0, 0, 0, 0, 10, 0, 0]),
                                (minute + 1, [1, 1, 0, 0, 0, 1, 5, 5])]


def _status(origins: dict[str, list[int]], stats: Stats) -> dict[str, object]:
    return {
        "counts": {"origins": origins, "series": []},
        "cache": {"fetched_by_origin": stats.fetched_by_origin,
                  "upstreams": {b: h.as_dict() for b, h in stats.upstreams.items()},
                  "verify_failures": stats.verify_failures},
        "in_flight": [{"key": "k", "written": 1, "size": 2}],
        "store": {"bytes": 123, "files": 2, "limit": 0},
        "processes": 2, "started": T0,
    }


def test_prometheus_text() -> None:
    stats = Stats()
    stats.fetched("deb", 500)
    stats.upstream("http://mirror.example/debian", 0.003)
    stats.upstream("http://mirror.example/debian", 0.3)
    stats.upstream("http://mirror.example/debian", 30.0, "timed out")
    slots = [0] * 7
    slots[0], slots[1], slots[BYTES_CACHE], slots[BYTES_UPSTREAM] = 2, 1, 1000, 500
    text = render_prometheus(_status({'we"ird\\': slots}, stats))
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) pkgdepot_\w+ .+", line)
            continue
        name_labels, value = line.rsplit(" ", 1)
        samples[name_labels] = float(value)
    assert samples['pkgdepot_requests_total{repo="we\\"ird\\\\",result="hit"}'] == 2
    assert samples['pkgdepot_sent_bytes_total{repo="we\\"ird\\\\",source="upstream"}'] == 500
    up = 'upstream="http://mirror.example/debian"'
    assert samples[f'pkgdepot_upstream_latency_seconds_bucket{{{up},le="0.005"}}'] == 1
    assert samples[f'pkgdepot_upstream_latency_seconds_bucket{{{up},le="0.5"}}'] == 2
    assert samples[f'pkgdepot_upstream_latency_seconds_bucket{{{up},le="10.0"}}'] == 2
    assert samples[f'pkgdepot_upstream_latency_seconds_bucket{{{up},le="+Inf"}}'] == 3
    assert samples[f'pkgdepot_upstream_latency_seconds_count{{{up}}}'] == 3
    assert samples[f'pkgdepot_upstream_requests_total{{{up},outcome="failed"}}'] == 1
    assert samples["pkgdepot_downloads_in_flight"] == 1
    assert samples["pkgdepot_store_bytes"] == 123
    assert stats.upstreams["http://mirror.example/debian"].last_error == "timed out"


def test_access_log_lines_are_quoted(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "access.log"

    async def run() -> None:
        log = AccessLog(str(path))
        log.record("127.0.0.1", "GET", '/x"y\n', "HTTP/1.1", 200, 0, "", 'agent "1"', "hit",
                   T0, 0.001)
        log.close()

    asyncio.run(run())
    assert path.read_text() == (
        '127.0.0.1 - - [15/Jan/2027:08:00:00 +0000] "GET /x\\"y\\x0a HTTP/1.1" 200 - "-" '
        '"agent \\"1\\"" hit\n')


def test_access_log_that_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"server\.access_log: cannot open"):
        AccessLog(str(tmp_path / "file" / "access.log"))
