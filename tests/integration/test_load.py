"""Load held: 1,000 concurrent client connections on loopback for 20 s (plus
a warm-up), mixed hits and misses, three clients reading one byte a second;
`python -m tests.reliability` runs it for minutes."""

from __future__ import annotations

from pathlib import Path

from pkgdepot.proxy.server import OPEN_BLOBS
from tests.reliability.load import Sample, load


def test_thousand_connections_no_error_no_leak_fair(tmp_path: Path) -> None:
    samples: list[Sample] = []
    # a generous bound on a loaded 2-core machine: a burst of concurrent misses
    # lifts the allocator's level once; a leak would climb on (load() checks
    # the second half's peak against the first's, and the end against the start)
    out = load(tmp_path, connections=1000, seconds=20, warm=5, every=2, samples=samples,
               growth=64 << 20)
    assert out.errors == [], "\n".join(out.errors[:20])
    assert out.requests >= 1000 and out.bytes_verified > 0
    assert out.rss_end <= out.rss_start + (64 << 20)
    # sampled all along (status.json "memory"); open blobs held by their LRU
    assert len(samples) >= 8 and all(s.mem for s in samples)
    assert max(s.mem["open_blobs"] for s in samples) <= OPEN_BLOBS
