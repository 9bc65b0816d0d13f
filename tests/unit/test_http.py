"""Range parsing and conditional-request helpers."""

from __future__ import annotations

import pytest

from pkgdepot.errors import BadRequest, RangeNotSatisfiable
from pkgdepot.proxy.http import content_type, etag_matches, parse_http_date, parse_range


@pytest.mark.parametrize(("header", "expected"), [
    (None, None),
    ("bytes=0-9", [(0, 9)]),
    ("bytes=90-", [(90, 99)]),
    ("bytes=-10", [(90, 99)]),
    ("bytes=-1000", [(0, 99)]),
    ("bytes=0-0,5-9, 20-29", [(0, 0), (5, 9), (20, 29)]),
    ("bytes=50-5000", [(50, 99)]),
    ("items=0-5", None),
    ("bytes=0-9,200-300", [(0, 9)]),
])
def test_parse_range(header: str | None, expected: list[tuple[int, int]] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes", "bytes=", "bytes=a-b", "bytes=9-1", "bytes=-",
                                    "bytes=1-2-3", "bytes=" + ",".join(["1-2"] * 65),
                                    "bytes=99999999999999999999-"])
def test_malformed_range(header: str) -> None:
    with pytest.raises(BadRequest):
        parse_range(header, 100)


def test_unsatisfiable_range() -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=100-200", 100)


def test_etag_and_dates() -> None:
    assert etag_matches('"a", W/"b"', '"b"')
    assert etag_matches("*", '"x"')
    assert not etag_matches('"a"', '"b"')
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777.0
    assert parse_http_date("garbage") is None


def test_content_types() -> None:
    assert content_type("pool/x_1_all.deb") == "application/vnd.debian.binary-package"
    assert content_type("dists/s/InRelease").startswith("text/plain")
    assert content_type("repodata/repomd.xml") == "application/xml"
    assert content_type("x/by-hash/SHA256/abc") == "application/octet-stream"
