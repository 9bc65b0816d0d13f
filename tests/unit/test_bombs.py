"""Decompression bombs and XML entity attacks in repository metadata: refused
with FormatError, bounded in memory and disk, leaving no temporary file."""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

import pkgdepot.formats as formats
from pkgdepot.errors import FormatError
from pkgdepot.formats.apt import packages_vouches
from pkgdepot.formats.rpm import parse_repomd, primary_packages

COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.compress, ".xz": lzma.compress, ".bz2": bz2.compress,
    ".zst": lambda b: zstandard.ZstdCompressor().compress(b)}
STANZA = b"Package: a\nVersion: 1\nArchitecture: all\nFilename: pool/a.deb\nSize: 1\n" \
         b"SHA256: " + b"a" * 64 + b"\n\n"
PRIMARY_HEAD = (b'<?xml version="1.0"?><metadata xmlns="http://linux.duke.edu/metadata/common" '
                b'packages="1">')


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_packages_bomb(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """3 MB of repeated stanzas compress to a few KB: over 100 times its size,
    so refused once past the (here lowered) floor, and the partial temporary
    file is gone."""
    monkeypatch.setattr(formats, "MIN_INDEX_LIMIT", 1 << 18)
    f = tmp_path / f"Packages{suffix}"
    f.write_bytes(COMPRESS[suffix](STANZA * ((3 << 20) // len(STANZA))))
    assert f.stat().st_size * formats.MAX_INDEX_RATIO < 3 << 20
    with pytest.raises(FormatError, match="decompression bomb"):
        list(packages_vouches("repo/d/", f, f.name))
    assert [p.name for p in tmp_path.iterdir()] == [f.name]


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_primary_bomb(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "MIN_INDEX_LIMIT", 1 << 18)
    f = tmp_path / f"primary.xml{suffix}"
    f.write_bytes(COMPRESS[suffix](PRIMARY_HEAD + b"<!-- " + b"x" * (3 << 20) + b" -->"))
    with pytest.raises(FormatError, match="decompression bomb"):
        list(primary_packages(f, f.name))


def test_bomb_with_the_real_floor(tmp_path: Path) -> None:
    """Unpatched: 100 MB of zeros in ~3 KB of zstd stops at the 64 MB floor."""
    f = tmp_path / "Packages.zst"
    f.write_bytes(zstandard.ZstdCompressor(level=3).compress(bytes(100 << 20)))
    with pytest.raises(FormatError, match=f"larger than {formats.MIN_INDEX_LIMIT} bytes"):
        list(packages_vouches("repo/d/", f, f.name))
    assert [p.name for p in tmp_path.iterdir()] == [f.name]


def test_legit_ratio_is_accepted(tmp_path: Path) -> None:
    """A real-looking index (distinct stanzas) well under the ratio passes."""
    body = b"".join(STANZA.replace(b"Package: a", f"Package: p{i}".encode())
                    .replace(b"pool/a.deb", f"pool/p{i}.deb".encode()) for i in range(5000))
    f = tmp_path / "Packages.xz"
    f.write_bytes(lzma.compress(body))
    assert len(list(packages_vouches("repo/d/", f, f.name))) == 5000


LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
"""


def _external(secret: Path, root: bytes) -> bytes:
    return (b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file://'
            + str(secret).encode() + b'">]>\n' + root)


def _repomd(payload: bytes) -> bytes:
    return (b'<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary">'
            b'<location href="repodata/' + payload + b'.xml.gz"/><checksum type="sha256">'
            + b"a" * 64 + b"</checksum></data></repomd>")


def _primary(payload: bytes) -> bytes:
    return (b'<metadata xmlns="http://linux.duke.edu/metadata/common"><package type="rpm">'
            b"<name>" + payload + b'</name><location href="a.rpm"/></package></metadata>')


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("attack", ["laughs", "external"])
def test_xml_entities_refused(tmp_path: Path, attack: str, suffix: str) -> None:
    """Billion laughs and external entities in repomd.xml and primary.xml: a
    FormatError, no expansion, and the file an entity names is never read into
    the result."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER")
    parsers = [(_primary, lambda p: list(primary_packages(p, p.name)))]
    if not suffix:  # repomd.xml is never compressed
        parsers.append((_repomd, lambda p: parse_repomd(p)))
    for build, parse in parsers:
        doc = (LAUGHS + build(b"&lol9;") if attack == "laughs"
               else _external(secret, build(b"&xxe;")))
        f = tmp_path / f"doc.xml{suffix}"
        f.write_bytes(gzip.compress(doc) if suffix else doc)
        with pytest.raises(FormatError) as exc:
            parse(f)
        assert "TOP-SECRET" not in str(exc.value)
        assert "Entit" in str(exc.value) or "entit" in str(exc.value)
