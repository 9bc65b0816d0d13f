"""Load held: 1,000 concurrent client connections on loopback for 20 s (plus
a warm-up), mixed hits and misses, three clients reading one byte a second;
`python -m tests.reliability` runs it for minutes."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.load import load


def test_thousand_connections_no_error_no_leak_fair(tmp_path: Path) -> None:
    out = load(tmp_path, connections=1000, seconds=20, warm=5)
    assert out.errors == [], "\n".join(out.errors[:20])
    assert out.requests >= 1000 and out.bytes_verified > 0
    # every client progressed, memory and descriptors stayed flat (checked in load())
    assert out.rss_end <= out.rss_start + (64 << 20)
