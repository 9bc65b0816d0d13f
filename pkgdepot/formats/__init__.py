"""Format backends: one sans-io module per packaging ecosystem.

A backend answers, for a path inside a repository, what kind of file it is
(`classify`), and, for an index it recognizes, which other files that index
vouches for and with which size and hash (`vouches`). Freshness (volatile or
immutable) is decided here and nowhere else.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import gzip
import io
import lzma
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Protocol

from pkgdepot.errors import FormatError

#: Largest decompressed index we accept (bounds decompression bombs).
MAX_INDEX_BYTES = 4 << 30
#: Real indices shrink 5-15x when compressed; a stream that grows more than
#: this (beyond a small floor) is a decompression bomb and refused.
MAX_INDEX_RATIO = 100
MIN_INDEX_LIMIT = 64 << 20


def index_limit(compressed_size: int) -> int:
    """The most bytes a compressed index of this size may decompress to."""
    return min(MAX_INDEX_BYTES, max(MIN_INDEX_LIMIT, compressed_size * MAX_INDEX_RATIO))

HASH_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
HEX_RE = re.compile(r"^[0-9a-f]+$")


class Kind(Enum):
    IMMUTABLE = "immutable"  # never revalidated: packages, by-hash, checksum-named
    VOLATILE = "volatile"    # revalidated upstream with conditional requests


class Role(Enum):
    PACKAGE = "package"
    SOURCE = "source"
    BY_HASH = "by-hash"             # apt by-hash/ALGO/HEX: verified by its own name
    CHECKSUM_NAMED = "checksum-named"  # rpm-md repodata/HEX-name: verified by its own name
    RELEASE_INLINE = "inrelease"    # InRelease: inline-signed
    RELEASE = "release"             # Release (signature in Release.gpg)
    RELEASE_SIG = "release-sig"
    INDEX = "index"                 # Packages*, Sources*, primary.xml*: lists packages
    REPOMD = "repomd"
    REPOMD_SIG = "repomd-sig"
    OTHER_VOLATILE = "volatile"     # Translation, Contents, metalink, keys...


@dataclass(frozen=True, slots=True)
class Digest:
    algo: str   # hashlib name: md5, sha1, sha256, sha512
    hexdigest: str


@dataclass(frozen=True, slots=True)
class PathInfo:
    ecosystem: str
    kind: Kind
    role: Role
    digest: Digest | None = None  # for BY_HASH and CHECKSUM_NAMED: the hash in the name


@dataclass(frozen=True, slots=True)
class Vouch:
    """An index says: the file at `key` has this size and digest."""

    key: str
    size: int | None
    digest: Digest
    #: For an alias (an apt by-hash path), the key of the file it is a copy of.
    canonical: str | None = None


@dataclass(frozen=True, slots=True)
class Package:
    """One package as an index lists it."""

    name: str
    version: str   # apt: [epoch:]upstream[-revision]; rpm: [epoch:]version-release
    arch: str
    location: str  # relative to the repository root
    size: int | None
    digest: Digest | None


class Backend(Protocol):
    name: str

    def classify(self, path: str) -> PathInfo | None:
        """What the file at this path (relative to the repository root, or a full
        upstream path) is, or None when this backend does not know it."""

    def vouches(self, key: str, info: PathInfo, content: Path) -> Iterator[Vouch]:
        """For an index stored at cache key `key`, yield what it vouches for."""

    def scan(self, key: str, info: PathInfo, content: Path
             ) -> tuple[list[Vouch], list[tuple[str, str, str]] | None]:
        """`vouches`, and for a package index also the (name, architecture,
        version) of each package it lists, from one reading of the file
        (None for other files)."""

    def signature_of(self, path: str) -> str | None:
        """The path of the detached signature that signs this file, if any."""

    def is_package_index(self, path: str) -> bool:
        """Whether the file at `path` lists packages (Packages*, primary.xml*)."""

    def packages(self, path: str, content: Path) -> Iterator[Package]:
        """The packages an index lists."""

    def compare_versions(self, a: str, b: str) -> int:
        """<0, 0, >0 as version a is older, equal, newer than b."""


def digest_from_name(algo_hint: str | None, hexdigest: str) -> Digest | None:
    hexdigest = hexdigest.lower()
    if not HEX_RE.match(hexdigest):
        return None
    algo = HASH_BY_LENGTH.get(len(hexdigest))
    if algo is None:
        return None
    if algo_hint is not None and algo_hint != algo:
        return None
    return Digest(algo, hexdigest)


@functools.cache
def _zstd_error() -> type[Exception]:
    import zstandard

    return zstandard.ZstdError


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Bounded(io.RawIOBase):
    """Wraps a decompressing stream: fails past `limit` bytes or on damaged data."""

    def __init__(self, inner: _Reader, limit: int, name: str = "index") -> None:
        self._inner = inner
        self._left = self._limit = limit
        self._name = name

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(b))
        except (OSError, EOFError, ValueError, lzma.LZMAError, _zstd_error()) as e:
            # gzip, bz2, lzma and zstd each raise their own errors on a damaged
            # or truncated stream.
            raise FormatError(f"{self._name}: damaged or truncated compressed data "
                              f"({type(e).__name__}: {e})") from e
        self._left -= len(data)
        if self._left < 0:
            raise FormatError(f"{self._name}: larger than {self._limit} bytes once "
                              "decompressed: refused as a decompression bomb")
        b[: len(data)] = data
        return len(data)


def open_index(path: Path, name: str, limit: int | None = None) -> IO[bytes]:
    """Open a possibly compressed index for reading, by the suffix of `name`.
    Reading more than `limit` bytes (default: `index_limit` of the file's
    size) or a damaged stream raises FormatError."""
    raw: _Reader
    f = open(path, "rb")  # noqa: SIM115 (returned to the caller)
    if limit is None:
        limit = index_limit(os.fstat(f.fileno()).st_size)
    try:
        if name.endswith(".gz"):
            raw = gzip.GzipFile(fileobj=f)
        elif name.endswith((".xz", ".lzma")):
            raw = lzma.LZMAFile(f)  # noqa: SIM115
        elif name.endswith(".bz2"):
            raw = bz2.BZ2File(f)
        elif name.endswith(".zst"):
            import zstandard

            raw = zstandard.ZstdDecompressor().stream_reader(f, closefd=True)
        else:
            raw = f
    except Exception as e:
        f.close()
        raise FormatError(f"{name}: cannot open the compressed stream: {e}") from e
    return io.BufferedReader(_Bounded(raw, limit, name.rsplit("/", 1)[-1]), 1 << 16)


COMPRESSION_SUFFIXES = (".xz", ".gz", ".bz2", ".lzma", ".zst", ".lz4")
#: Of several forms of one index (they hold the same list), the one to read:
#: the cheapest to decompress first (gz reads about four times as fast as xz).
READ_ORDER = ("", ".zst", ".gz", ".xz", ".lzma", ".bz2")


def read_rank(name: str) -> int:
    """Where the form `name` of an index stands in READ_ORDER (lower: read
    it rather than another form; unknown compressions last)."""
    suffix = split_compression(name)[1]
    return READ_ORDER.index(suffix) if suffix in READ_ORDER else len(READ_ORDER)


def split_compression(name: str) -> tuple[str, str]:
    """("dists/s/main/binary-amd64/Packages", ".xz") for ".../Packages.xz";
    the suffix is "" for an uncompressed name."""
    for c in COMPRESSION_SUFFIXES:
        if name.endswith(c):
            return name[: -len(c)], c
    return name, ""


class Hash(Protocol):
    """What `decompress_to` feeds: a hashlib object."""

    def update(self, data: bytes, /) -> None: ...


def decompress_to(content: Path, name: str, directory: Path,
                  hashes: Sequence[Hash] = ()) -> Path:
    """Decompress `content` (compressed as `name` says, bounded) into a new
    temporary file in `directory`; the caller removes it. The `hashes`
    (hashlib objects) are fed the decompressed bytes on the way."""
    fd, tmp = tempfile.mkstemp(prefix=".idx-", dir=directory)
    try:
        with open_index(content, name) as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(1 << 20):
                for h in hashes:
                    h.update(chunk)
                dst.write(chunk)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


@contextlib.contextmanager
def plain_index(content: Path, name: str) -> Iterator[Path]:
    """`content` itself if `name` is uncompressed, else a temporary
    decompressed copy beside it, removed afterwards."""
    if not split_compression(name)[1]:
        yield content
        return
    plain = decompress_to(content, name, content.parent)
    try:
        yield plain
    finally:
        plain.unlink(missing_ok=True)


def backends() -> tuple[Backend, ...]:
    from pkgdepot.formats.apt import AptBackend
    from pkgdepot.formats.rpm import RpmBackend

    return (AptBackend(), RpmBackend())


@functools.cache
def loaded_backends() -> tuple[Backend, ...]:
    """The backends `classify` asks (imported on the first call: a server
    calls this at start, so that its first request does not wait for that)."""
    return backends()


def classify(path: str) -> tuple[Backend, PathInfo] | None:
    """Ask every backend; the first that knows the path decides."""
    for b in loaded_backends():
        info = b.classify(path)
        if info is not None:
            return b, info
    return None
