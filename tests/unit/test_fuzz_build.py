"""Fuzzing what the builder reads from outside: package payloads (ar, tar,
cpio, rpm) and template trees (package lists, build.toml). Either they are
accepted, or the project's own error says why; a hostile package never writes
outside the root it is unpacked into."""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pkgdepot.build.builder import build_config
from pkgdepot.build.tree import load
from pkgdepot.build.unpack import RPM_MAGIC, unpack
from pkgdepot.errors import PkgdepotError
from tests.fuzzing import fuzz, scratch

NAMES = ["usr", "bin", "etc", "lnk", "a", "..", ".", "", "/", "x y", "é", "\\", "con"]
TARGETS = ["", "a", "../a", "../..", "../../..", "/", "{outside}", "{outside}/victim",
           "./usr/bin", "usr/../../x", "lnk/x", "/etc/passwd"]


def _name(parts: list[str], dot: bool) -> str:
    return ("./" if dot else "") + "/".join(parts)


member = st.tuples(
    st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]),
    st.builds(_name, st.lists(st.sampled_from(NAMES), min_size=1, max_size=4), st.booleans()),
    st.sampled_from(TARGETS), st.binary(max_size=20))


def _tar(members: list[tuple[bytes, str, str, bytes]], outside: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as t:
        for typ, name, target, body in members:
            info = tarfile.TarInfo(name)
            info.type = typ
            info.linkname = target.format(outside=outside)
            if typ == tarfile.REGTYPE:
                info.size = len(body)
                t.addfile(info, io.BytesIO(body))
            else:
                t.addfile(info)
    return buf.getvalue()


def ar(members: list[tuple[str, bytes]]) -> bytes:
    """A Debian package's outer ar archive."""
    out = [b"!<arch>\n"]
    for name, data in members:
        out.append(f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n"
                   .encode() + data + (b"\n" if len(data) % 2 else b""))
    return b"".join(out)


def _snapshot(d: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            out[str(p)] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


def _unpack_contained(data: bytes, family: str) -> None:
    with scratch() as d:
        tmp = Path(d)
        outside = tmp / "outside"
        outside.mkdir()
        (outside / "victim").write_text("original\n")
        pkg = tmp / f"p.{family}"
        pkg.write_bytes(data.replace(b"{outside}", str(outside).encode()))
        before = _snapshot(outside)
        with contextlib.suppress(PkgdepotError):
            unpack(pkg, tmp / "root", family)
        assert _snapshot(outside) == before
        assert sorted(p.name for p in tmp.iterdir()) == sorted(["outside", pkg.name, "root"])


@given(st.lists(member, max_size=8))
@fuzz
def test_deb_members(members: list[tuple[bytes, str, str, bytes]]) -> None:
    with scratch() as d:
        data = _tar(members, Path(d) / "never")
    _unpack_contained(ar([("debian-binary", b"2.0\n"), ("control.tar.gz", b""),
                          ("data.tar.gz", data)]), "deb")


@given(st.sampled_from([b"", b"!<arch>\n", RPM_MAGIC, b"070701", b"\x1f\x8b", b"\xfd7zXZ"]),
       st.binary(max_size=300))
@fuzz
def test_garbage_packages(prefix: bytes, body: bytes) -> None:
    for family in ("deb", "rpm"):
        _unpack_contained(prefix + body, family)


@given(st.binary(max_size=200), st.binary(max_size=200))
@fuzz
def test_deb_with_garbage_members(control: bytes, data: bytes) -> None:
    _unpack_contained(ar([("debian-binary", b"2.0\n"), ("control.tar.xz", control),
                          ("data.tar.zst", data)]), "deb")


LIST_LINES = ["base-files", "bash=5.2", "udev-", "@other", "@default", "@../x", "@", "-",
              "name=", "=1", "a b", "# c", "bash=1 # pin", "x=../y", "é", "\x00", "a:amd64",
              "bash=5:1.2-3~b", "@minimal"]


@given(st.lists(st.one_of(st.sampled_from(LIST_LINES), st.text(max_size=20)), max_size=10),
       st.binary(max_size=40), st.text(max_size=200))
@fuzz
def test_template_tree(lines: list[str], raw: bytes, toml: str) -> None:
    with scratch() as d:
        tree = Path(d) / "templates"
        top = tree / "config"
        leaf = tree / "debian/12/amd64/config"
        top.mkdir(parents=True)
        leaf.mkdir(parents=True)
        (top / "default.list").write_text("\n".join(lines))
        (leaf / "default.list").write_bytes(raw)
        (top / "other.list").write_text("@default\n")
        (leaf / "build.toml").write_text(toml)
        try:
            template = load(tree / "debian/12/amd64")
            for set_name in ("default", "other", "minimal"):
                with contextlib.suppress(PkgdepotError):
                    template.explain(set_name)
            build_config(template, None, None)
        except PkgdepotError:
            pass


TOML_PIECES = ['family = "deb"', 'family = "rpm"', "family = 3", 'depot = "http://d:3142"',
               "depot = []", "[[repositories]]", 'name = "debian"', "name = 1",
               'suite = "bookworm"', "suite = []", 'components = ["main"]', "components = 5",
               'components = "main"', "snapshot = 7", 'snapshot = "prod"', "[replacements]",
               'udev = "fake"', "udev = 1", "replacements = 1", "repositories = 1",
               "include_required = 1", "repositories = [1]"]


@given(st.booleans(), st.lists(st.sampled_from(TOML_PIECES), max_size=12))
@fuzz
def test_build_toml(valid_head: bool, pieces: list[str]) -> None:
    head = ['family = "deb"', 'depot = "http://d:3142"'] if valid_head else []
    with scratch() as d:
        leaf = Path(d) / "t/debian/12/amd64/config"
        leaf.mkdir(parents=True)
        (leaf / "build.toml").write_text("\n".join(head + pieces) + "\n")
        try:
            cfg = build_config(load(leaf.parent), None, None)
        except PkgdepotError:
            return
        assert cfg.family in ("deb", "rpm")
        for r in cfg.repositories:
            assert isinstance(r.name, str) and all(isinstance(c, str) for c in r.components)
            assert r.snapshot is None or isinstance(r.snapshot, str)
