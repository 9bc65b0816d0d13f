"""Format backends: classification decides freshness; indices vouch for files."""

from __future__ import annotations

import gzip
import hashlib
import lzma
from pathlib import Path

import pytest

from pkgdepot.errors import FormatError
from pkgdepot.formats import Digest, Kind, Role, classify, open_index
from pkgdepot.formats.apt import AptBackend
from pkgdepot.formats.rpm import RpmBackend

H = "a" * 64


@pytest.mark.parametrize(("path", "kind", "role"), [
    ("debian/dists/bookworm/InRelease", Kind.VOLATILE, Role.RELEASE_INLINE),
    ("debian/dists/bookworm/Release", Kind.VOLATILE, Role.RELEASE),
    ("debian/dists/bookworm/Release.gpg", Kind.VOLATILE, Role.RELEASE_SIG),
    ("debian/dists/bookworm/main/binary-amd64/Packages.xz", Kind.VOLATILE, Role.INDEX),
    ("debian/dists/bookworm/main/source/Sources.gz", Kind.VOLATILE, Role.INDEX),
    ("debian/dists/bookworm/main/Contents-amd64.gz", Kind.VOLATILE, Role.OTHER_VOLATILE),
    ("debian/dists/bookworm/main/i18n/Translation-en.bz2", Kind.VOLATILE, Role.OTHER_VOLATILE),
    (f"debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/{H}", Kind.IMMUTABLE,
     Role.BY_HASH),
    ("debian/pool/main/h/hello/hello_2.10-3_amd64.deb", Kind.IMMUTABLE, Role.PACKAGE),
    ("debian/pool/main/d/d-i/x_1_amd64.udeb", Kind.IMMUTABLE, Role.PACKAGE),
    ("debian/pool/main/h/hello/hello_2.10-3.dsc", Kind.IMMUTABLE, Role.SOURCE),
    ("debian/pool/main/h/hello/hello_2.10.orig.tar.gz", Kind.IMMUTABLE, Role.SOURCE),
    ("fedora/repodata/repomd.xml", Kind.VOLATILE, Role.REPOMD),
    ("fedora/repodata/repomd.xml.asc", Kind.VOLATILE, Role.REPOMD_SIG),
    (f"fedora/repodata/{H}-primary.xml.zst", Kind.IMMUTABLE, Role.CHECKSUM_NAMED),
    ("fedora/repodata/primary.xml.gz", Kind.VOLATILE, Role.INDEX),
    ("fedora/Packages/h/hello-2.10-1.fc40.x86_64.rpm", Kind.IMMUTABLE, Role.PACKAGE),
    ("fedora/drpms/hello-2.10-1_2.10-2.x86_64.drpm", Kind.IMMUTABLE, Role.PACKAGE),
    ("metalink", Kind.VOLATILE, Role.OTHER_VOLATILE),
    ("opensuse/media.1/media", Kind.VOLATILE, Role.OTHER_VOLATILE),
])
def test_classify(path: str, kind: Kind, role: Role) -> None:
    found = classify(path)
    assert found is not None
    _, info = found
    assert (info.kind, info.role) == (kind, role)


@pytest.mark.parametrize("path", ["etc/passwd", "index.html", "debian/README",
                                  "debian/dists/bookworm/by-hash/SHA256/nothex",
                                  "x/repodata/../y"])
def test_classify_unknown(path: str) -> None:
    assert classify(path) is None


def test_by_hash_carries_digest() -> None:
    info = AptBackend().classify(f"d/by-hash/SHA256/{H}")
    assert info is not None and info.digest == Digest("sha256", H)
    assert AptBackend().classify(f"d/by-hash/SHA256/{'a' * 40}") is None  # wrong length


RELEASE = f"""\
Origin: Test
Suite: stable
SHA256:
 {"1" * 64} 1234 main/binary-amd64/Packages
 {"2" * 64} 567 main/binary-amd64/Packages.xz
 {"3" * 64} 9 ../../../etc/passwd
MD5Sum:
 {"4" * 32} 1234 main/binary-amd64/Packages
"""


def test_release_vouches(tmp_path: Path) -> None:
    f = tmp_path / "InRelease"
    f.write_text(RELEASE)
    b = AptBackend()
    info = b.classify("dists/stable/InRelease")
    assert info is not None
    vs = {v.key: v for v in b.vouches("repo/x/dists/stable/InRelease", info, f)}
    assert vs["repo/x/dists/stable/main/binary-amd64/Packages.xz"].size == 567
    # the strongest hash wins
    assert vs["repo/x/dists/stable/main/binary-amd64/Packages"].digest == Digest("sha256", "1" * 64)
    assert not any("passwd" in k for k in vs)  # traversal entries are dropped


PACKAGES = """\
Package: hello
Version: 1.0
Architecture: all
Filename: pool/main/h/hello/hello_1.0_all.deb
Size: 1000
SHA256: {h}

Package: evil
Version: 1
Filename: ../../etc/passwd
Size: 1
SHA256: {h}

Package: nohash
Version: 1
Filename: pool/main/n/nohash/nohash_1_all.deb
Size: 1
MD5sum: {m}
"""


def test_packages_vouches_compressed(tmp_path: Path) -> None:
    f = tmp_path / "blob"
    f.write_bytes(lzma.compress(PACKAGES.format(h=H, m="b" * 32).encode()))
    b = AptBackend()
    key = "http/mirror.example/debian/dists/stable/main/binary-amd64/Packages.xz"
    info = b.classify(key.split("/", 2)[2])
    assert info is not None
    vs = {v.key: v for v in b.vouches(key, info, f)}
    assert vs == {
        "http/mirror.example/debian/pool/main/h/hello/hello_1.0_all.deb":
            vs["http/mirror.example/debian/pool/main/h/hello/hello_1.0_all.deb"],
        "http/mirror.example/debian/pool/main/n/nohash/nohash_1_all.deb":
            vs["http/mirror.example/debian/pool/main/n/nohash/nohash_1_all.deb"],
    }
    hello = vs["http/mirror.example/debian/pool/main/h/hello/hello_1.0_all.deb"]
    assert hello.size == 1000 and hello.digest == Digest("sha256", H)
    assert vs["http/mirror.example/debian/pool/main/n/nohash/nohash_1_all.deb"].digest.algo == "md5"


def test_garbage_index_is_a_format_error(tmp_path: Path) -> None:
    f = tmp_path / "blob"
    f.write_bytes(b"\xfd7zXZ\x00garbage")
    b = AptBackend()
    info = b.classify("dists/s/main/binary-amd64/Packages.xz")
    assert info is not None
    with pytest.raises((FormatError, lzma.LZMAError)):
        list(b.vouches("k/dists/s/main/binary-amd64/Packages.xz", info, f))


def test_decompression_is_bounded(tmp_path: Path) -> None:
    """A small gzip that expands hugely is cut off at the limit."""
    f = tmp_path / "bomb.gz"
    f.write_bytes(gzip.compress(b"\0" * (8 << 20)))
    with open_index(f, "Packages.gz", limit=1 << 20) as r, pytest.raises(FormatError):
        while r.read(1 << 16):
            pass


REPOMD = f"""<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo">
  <revision>1</revision>
  <data type="primary">
    <checksum type="sha256">{H}</checksum>
    <location href="repodata/{H}-primary.xml.gz"/>
    <size>321</size>
  </data>
  <data type="evil">
    <checksum type="sha256">{H}</checksum>
    <location href="../../etc/passwd"/>
  </data>
</repomd>
"""

PRIMARY = f"""<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" packages="1">
<package type="rpm">
  <name>hello</name>
  <checksum type="sha256" pkgid="YES">{H}</checksum>
  <size package="4321" installed="1" archive="1"/>
  <location href="Packages/hello-1.0-1.noarch.rpm"/>
</package>
</metadata>
"""


def test_repomd_and_primary_vouches(tmp_path: Path) -> None:
    b = RpmBackend()
    repomd = tmp_path / "repomd"
    repomd.write_text(REPOMD)
    info = b.classify("repodata/repomd.xml")
    assert info is not None
    vs = list(b.vouches("repo/f/repodata/repomd.xml", info, repomd))
    assert [(v.key, v.size) for v in vs] == [(f"repo/f/repodata/{H}-primary.xml.gz", 321)]
    primary = tmp_path / "primary"
    primary.write_bytes(gzip.compress(PRIMARY.encode()))
    pkey = f"repo/f/repodata/{H}-primary.xml.gz"
    pinfo = b.classify(pkey.split("/", 2)[2])
    assert pinfo is not None
    vs = list(b.vouches(pkey, pinfo, primary))
    assert [(v.key, v.size, v.digest.hexdigest) for v in vs] == [
        ("repo/f/Packages/hello-1.0-1.noarch.rpm", 4321, H)]


def test_xml_entities_are_refused(tmp_path: Path) -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            '<repomd xmlns="http://linux.duke.edu/metadata/repo">&b;</repomd>')
    f = tmp_path / "repomd"
    f.write_text(bomb)
    b = RpmBackend()
    info = b.classify("repodata/repomd.xml")
    assert info is not None
    with pytest.raises(FormatError):
        list(b.vouches("k/repodata/repomd.xml", info, f))


def test_digest_helper() -> None:
    assert hashlib.sha256(b"").hexdigest().startswith("e3b0")
