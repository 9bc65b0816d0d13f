"""What a reliability scenario measured, and helpers every scenario shares:
an HTTP client that tells a complete body from a cut one, process samples
(RSS, open file descriptors) and a check of every blob in a data directory."""

from __future__ import annotations

import hashlib
import http.client
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Outcome:
    """The measured result of one scenario (one row of docs/RELIABILITY.md)."""

    name: str
    requests: int = 0          # client requests made
    refused: int = 0           # requests that got the designed refusal (5xx or a reset)
    errors: list[str] = field(default_factory=list)  # anything not designed: must stay empty
    bytes_verified: int = 0    # body bytes checked against their known sha256
    blobs_verified: int = 0    # blobs in the store re-hashed after the scenario
    kills: int = 0
    rss_start: int = 0
    rss_end: int = 0
    fds_start: int = 0
    fds_end: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def error(self, msg: str) -> None:
        self.errors.append(msg)

    def check(self, ok: bool, msg: str) -> None:
        if not ok:
            self.errors.append(msg)

    def verified(self, got: Got, sha256: str, what: str) -> bool:
        """Count a whole body that has the file's hash as verified bytes; any
        other answer is an error named by `what`."""
        if got.status == 200 and got.complete and got.sha256 == sha256:
            self.bytes_verified += len(got.body)
            return True
        self.error(f"{what}: HTTP {got.status}, complete={got.complete}, "
                   f"{len(got.body)} bytes {got.body[:200]!r}")
        return False

    def fetch_good(self, port: int, path: str, sha256: str, what: str) -> Got:
        """GET `path` from the depot (one request) and check it as `verified` does."""
        got = fetch(port, path)
        self.requests += 1
        self.verified(got, sha256, f"{what}: {path}")
        return got

    def merge(self, other: Outcome) -> None:
        self.requests += other.requests
        self.refused += other.refused
        self.errors += other.errors
        self.bytes_verified += other.bytes_verified
        self.blobs_verified += other.blobs_verified
        self.kills += other.kills


@dataclass
class Got:
    status: int
    length: int          # Content-Length announced (-1 if none)
    body: bytes
    complete: bool       # the whole announced body arrived
    headers: dict[str, str]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def fetch(port: int, path: str, headers: dict[str, str] | None = None,
          timeout: float = 30) -> Got:
    """GET from the depot; a reset or a short body is reported, not raised."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        hdrs = {k: v for k, v in r.getheaders()}
        length = int(r.getheader("Content-Length") or -1)
        try:
            body = r.read()
            return Got(r.status, length, body, True, hdrs)
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as e:
            return Got(r.status, length, getattr(e, "partial", b""), False, hdrs)
    except (ConnectionError, TimeoutError, http.client.HTTPException) as e:
        return Got(0, -1, repr(e).encode(), False, {})
    finally:
        conn.close()


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fds(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_soft(pid: int) -> int:
    """The process's soft RLIMIT_NOFILE (from /proc/PID/limits)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def verify_blobs(data_dir: Path, out: Outcome) -> None:
    """Every blob's content must match its name; no temporary file may be named
    by the catalog. Counts what was checked."""
    for blob in sorted((data_dir / "blobs").glob("*/*")):
        h = hashlib.sha256()
        with open(blob, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        out.blobs_verified += 1
        out.check(h.hexdigest() == blob.name, f"blob {blob.name} holds other bytes")
