"""Fuzzing the metadata parsers (Release/InRelease, Packages, Sources,
repomd.xml, primary.xml) with hostile bytes: they either parse or raise the
project's own FormatError, never anything else."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard
from hypothesis import given
from hypothesis import strategies as st

from pkgdepot.errors import PkgdepotError
from pkgdepot.formats import Kind, PathInfo, Role
from pkgdepot.formats.apt import (
    AptBackend,
    packages_vouches,
    parse_release,
    release_entries,
    release_vouches,
    sources_vouches,
)
from pkgdepot.formats.rpm import parse_repomd, primary_packages, repomd_vouches
from tests.fuzzing import fuzz, scratch

COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda b: b, ".gz": gzip.compress, ".xz": lzma.compress, ".bz2": bz2.compress,
    ".zst": lambda b: zstandard.ZstdCompressor().compress(b)}

# Building blocks of deb822 text: real field names, separators and garbage.
FIELDS = ["Package", "Version", "Architecture", "Filename", "Size", "SHA256", "SHA512",
          "MD5Sum", "SHA1", "Directory", "Files", "Checksums-Sha256", "Suite", "Codename",
          "Date", "Valid-Until", "-----BEGIN PGP SIGNED MESSAGE-----", "Hash", "X"]
value = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(["../../etc/passwd", "/abs/x.deb", "pool/a/b.deb", "a" * 64, "-1",
                     "99999999999999999999999", " 0" * 10, "\n " + "a" * 64 + " 12 x/y",
                     "\n " + "b" * 64 + " 5 ../../x", "\n .\n", ""]),
)
line = st.one_of(st.builds(lambda f, v: f"{f}: {v}", st.sampled_from(FIELDS), value),
                 value, st.just(""), st.just(" continuation"), st.just("-----BEGIN PGP "
                                                                       "SIGNATURE-----"))
deb822_text = st.lists(line, max_size=30).map("\n".join)
raw_bytes = st.one_of(st.binary(max_size=400), deb822_text.map(lambda t: t.encode()))


@contextlib.contextmanager
def _file(data: bytes, suffix: str = "") -> Iterator[Path]:
    with scratch() as d:
        p = Path(d) / f"f{suffix}"
        p.write_bytes(data)
        yield p


def _drain(it: Iterator[object]) -> None:
    try:
        for _ in it:
            pass
    except PkgdepotError:
        pass


@given(raw_bytes)
@fuzz
def test_release(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        rel = parse_release(text)
    except PkgdepotError:
        return
    for name, (size, digests) in release_entries(rel).items():
        assert ".." not in name.split("/") and not name.startswith("/")
        assert isinstance(size, int) and digests
    with _file(data) as p:
        for v in release_vouches("repo/d/dists/s/InRelease", p):
            assert v.key.startswith("repo/d/dists/s/")
            assert ".." not in v.key.split("/")


@given(raw_bytes, st.sampled_from(sorted(COMPRESS)))
@fuzz
def test_packages_and_sources(data: bytes, suffix: str) -> None:
    with _file(COMPRESS[suffix](data), suffix) as p:
        for fn, name in ((packages_vouches, "Packages"), (sources_vouches, "Sources")):
            try:
                for v in fn("repo/d/", p, name + suffix):
                    assert v.key.startswith("repo/d/") and ".." not in v.key.split("/")
            except PkgdepotError:
                pass
        _drain(AptBackend().packages("dists/s/main/binary-amd64/Packages" + suffix, p))
        path = "dists/s/main/binary-amd64/Packages" + suffix
        info = AptBackend().classify(path)
        assert info is not None
        try:
            vouches, packages = AptBackend().scan("repo/d/" + path, info, p)
        except PkgdepotError:
            return
        assert packages is not None and len(vouches) <= len(packages)


@given(st.binary(max_size=300), st.sampled_from(sorted(COMPRESS)))
@fuzz
def test_corrupt_compressed_indices(data: bytes, suffix: str) -> None:
    """Garbage or truncated streams under a compression suffix: FormatError."""
    good = COMPRESS[suffix](b"Package: a\nVersion: 1\n")
    for blob in (data, good[: len(good) // 2], good + data):
        with _file(blob, suffix) as p:
            _drain(packages_vouches("repo/d/", p, "Packages" + suffix))
            _drain(primary_packages(p, "primary.xml" + suffix))


XML_PIECES = st.sampled_from([
    "<?xml version='1.0'?>", '<repomd xmlns="http://linux.duke.edu/metadata/repo">',
    "</repomd>", '<data type="primary">', "</data>", '<location href="repodata/p.xml.gz"/>',
    '<location href="../../etc/passwd"/>', '<location href="/abs"/>',
    '<location href="http://evil.example/x"/>', '<location xml:base="http://e.example/" '
    'href="a.rpm"/>', '<checksum type="sha256">' + "a" * 64 + "</checksum>",
    '<checksum type="nonsense">zz</checksum>', "<size>12</size>", "<size>-x</size>",
    '<metadata xmlns="http://linux.duke.edu/metadata/common">', "</metadata>",
    '<package type="rpm">', "</package>", "<name>n</name>", "<arch>x86_64</arch>",
    '<version epoch="1" ver="2" rel="3"/>', '<size package="abc"/>', "<", ">", "&amp;",
    "&undefined;", "<![CDATA[x]]>", "<!-- c -->", "\x00"])
xml_bytes = st.one_of(st.binary(max_size=300),
                      st.lists(XML_PIECES, max_size=40).map(lambda p: "".join(p).encode()))


@given(xml_bytes)
@fuzz
def test_repomd(data: bytes) -> None:
    with _file(data) as p:
        try:
            for _typ, href, _size, _digest in parse_repomd(p):
                assert not href.startswith("/") and ".." not in href.split("/")
        except PkgdepotError:
            pass
        _drain(repomd_vouches("repo/f/", p))


@given(xml_bytes, st.sampled_from(sorted(COMPRESS)))
@fuzz
def test_primary(data: bytes, suffix: str) -> None:
    with _file(COMPRESS[suffix](data), suffix) as p:
        try:
            for pkg in primary_packages(p, "primary.xml" + suffix):
                assert ".." not in pkg.location.split("/") and "://" not in pkg.location
        except PkgdepotError:
            pass


@given(st.text(max_size=200))
@fuzz
def test_classify_any_path(path: str) -> None:
    """Classification of any path (metalink and mirrorlist included) is total."""
    from pkgdepot.formats import classify

    found = classify(path)
    if found is not None:
        backend, info = found
        assert isinstance(info, PathInfo) and isinstance(info.kind, Kind)
        assert isinstance(info.role, Role) and backend.name in ("apt", "rpm")
