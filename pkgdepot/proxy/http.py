"""Small HTTP pieces the server needs: Range parsing, conditional requests,
content types, dates. Pure functions, tested on their own."""

from __future__ import annotations

import email.utils
import re

from pkgdepot.errors import BadRequest, RangeNotSatisfiable

MAX_RANGES = 64
RANGE_RE = re.compile(r"^[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*$")

CONTENT_TYPES = (
    (".deb", "application/vnd.debian.binary-package"),
    (".udeb", "application/vnd.debian.binary-package"),
    (".ddeb", "application/vnd.debian.binary-package"),
    (".rpm", "application/x-rpm"),
    (".drpm", "application/x-rpm"),
    (".dsc", "text/plain; charset=utf-8"),
    (".xml", "application/xml"),
    (".gz", "application/gzip"),
    (".xz", "application/x-xz"),
    (".bz2", "application/x-bzip2"),
    (".zst", "application/zstd"),
    (".zck", "application/octet-stream"),
    (".asc", "application/pgp-signature"),
    (".gpg", "application/pgp-signature"),
    (".key", "application/pgp-keys"),
    (".json", "application/json"),
    (".yaml", "text/yaml"),
)
TEXT_NAMES = {"InRelease", "Release", "Packages", "Sources", "media", "content"}


def content_type(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    if base in TEXT_NAMES or (base.startswith("Translation-") and "." not in base):
        return "text/plain; charset=utf-8"
    for suffix, ctype in CONTENT_TYPES:
        if base.endswith(suffix):
            return ctype
    return "application/octet-stream"


def parse_range(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """Parse a Range header against a file of `size` bytes.

    Returns None for "send everything" (no header, or a unit other than
    bytes, which RFC 9110 says to ignore), else inclusive (first, last) pairs.
    Malformed syntax -> BadRequest; nothing satisfiable -> RangeNotSatisfiable.
    """
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep:
        raise BadRequest("malformed Range header")
    if unit.strip().lower() != "bytes":
        return None
    parts = spec.split(",")
    if len(parts) > MAX_RANGES:
        raise BadRequest(f"more than {MAX_RANGES} ranges")
    out: list[tuple[int, int]] = []
    for part in parts:
        m = RANGE_RE.match(part)
        if not m or (m.group(1) == "" and m.group(2) == ""):
            raise BadRequest(f"malformed Range header: {part.strip()!r}")
        first_s, last_s = m.group(1), m.group(2)
        if len(first_s) > 19 or len(last_s) > 19:
            raise BadRequest("Range value too large")
        if first_s == "":  # suffix: the last N bytes
            n = int(last_s)
            if n == 0 or size == 0:  # nothing to take the last bytes of
                continue
            out.append((max(0, size - n), size - 1))
            continue
        first = int(first_s)
        if last_s and int(last_s) < first:
            raise BadRequest(f"malformed Range header: {part.strip()!r}")
        last = int(last_s) if last_s else size - 1
        if first >= size:
            continue
        out.append((first, min(last, size - 1)))
    if not out:
        raise RangeNotSatisfiable(f"no part of the Range lies within the file's {size} bytes")
    return out


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    return dt.timestamp()


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match semantics (weak comparison)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    want = etag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == want for t in header.split(","))
