"""Release files are read with apt's own parser (python-apt): the same
fields and checksum entries as python-debian's deb822 reads, whose import
alone took a tenth of a small sync. gpg clearsigns the inline-signed ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from debian import deb822

from pkgdepot.errors import FormatError
from pkgdepot.formats import Digest
from pkgdepot.formats.apt import cleartext, parse_release, release_entries
from tests.support.keys import GpgKey

SHA = "0123456789abcdef" * 4
RELEASE = f"""\
Origin: Test
Label: Test
Suite: stable
Codename: bookworm
Date: Sat, 21 Nov 2026 10:00:00 UTC
Acquire-By-Hash: yes
Architectures: amd64 arm64
Components: main contrib
Description: a test archive
 with a second line
MD5Sum:
 {"a" * 32}  1234 main/binary-amd64/Packages
 {"b" * 32}   321 main/binary-amd64/Packages.xz
SHA256:
 {SHA}  1234 main/binary-amd64/Packages
 {"C" * 64}   321 main/binary-amd64/Packages.xz
 {"d" * 64}   999 ../../etc/passwd
 {"e" * 64}   99x main/bad-size
 {"f" * 64}    77 main/i18n/Translation-en.bz2
"""


def _deb822_entries(text: str) -> dict[str, tuple[int, list[Digest]]]:
    """What the sync read with python-debian (the code this replaces)."""
    out: dict[str, tuple[int, list[Digest]]] = {}
    rel = deb822.Release(text)
    for fld, algo in (("SHA256", "sha256"), ("MD5Sum", "md5")):
        for item in rel.get(fld, []):
            name, key = item["name"], "md5sum" if fld == "MD5Sum" else fld.lower()
            if ".." in name.split("/") or not item["size"].isdigit():
                continue
            entry = out.setdefault(name, (int(item["size"]), []))
            entry[1].append(Digest(algo, item[key].lower()))
    return out


def test_a_release_reads_as_python_debian_reads_it() -> None:
    rel = parse_release(RELEASE)
    oracle = deb822.Release(RELEASE)
    for name in ("Origin", "Suite", "Codename", "Date", "Components", "Description"):
        assert rel[name] == oracle[name]
    assert rel.get("acquire-by-hash") == "yes"  # names are case-insensitive, as in apt
    assert "Label" in rel and "Valid-Until" not in rel and rel.get("Valid-Until") == ""
    entries = release_entries(rel)
    assert entries == _deb822_entries(RELEASE)
    # strongest hash first; the traversal and the bad size are left out
    assert entries["main/binary-amd64/Packages"] == (
        1234, [Digest("sha256", SHA), Digest("md5", "a" * 32)])
    assert entries["main/binary-amd64/Packages.xz"][1][0] == Digest("sha256", "c" * 64)
    assert set(entries) == {"main/binary-amd64/Packages", "main/binary-amd64/Packages.xz",
                            "main/i18n/Translation-en.bz2"}


def test_an_inline_signed_release_reads_as_its_signed_text(tmp_path: Path,
                                                           gpg_key: GpgKey) -> None:
    (tmp_path / "Release").write_text(RELEASE)
    gpg_key.clearsign(tmp_path / "Release", tmp_path / "InRelease")
    signed = (tmp_path / "InRelease").read_text()
    assert signed.startswith("-----BEGIN PGP SIGNED MESSAGE-----\nHash: ")
    assert cleartext(signed).rstrip("\n") == RELEASE.rstrip("\n")
    rel = parse_release(signed)
    assert rel["Description"] == deb822.Release(signed)["Description"]
    assert release_entries(rel) == release_entries(parse_release(RELEASE))
    assert release_entries(rel) == _deb822_entries(signed)


def test_dash_escaped_lines_are_unescaped() -> None:
    """OpenPGP's cleartext framework escapes each signed line that starts
    with a dash (so that none looks like an armor line)."""
    signed = ("\n-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nA: 1\n- -B: 2\n"
              "- -----BEGIN PGP SIGNATURE-----\n-----BEGIN PGP SIGNATURE-----\n\nxyz\n"
              "-----END PGP SIGNATURE-----\n")
    assert cleartext(signed) == "A: 1\n-B: 2\n-----BEGIN PGP SIGNATURE-----"


@pytest.mark.parametrize("text", ["", "\n\n", "-----BEGIN PGP SIGNED MESSAGE-----\n"])
def test_nothing_to_read_is_an_empty_release(text: str) -> None:
    assert release_entries(parse_release(text)) == {}


@pytest.mark.parametrize("text", ["not a field\n", "A: 1\nno colon here\n"])
def test_garbage_is_a_format_error(text: str) -> None:
    with pytest.raises(FormatError, match="unparsable Release file"):
        parse_release(text)
