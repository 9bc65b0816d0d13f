"""Unpacking refuses members that would land outside the root."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from libarchive.exception import ArchiveError

from pkgdepot.build.unpack import UnpackError, unpack


def deb(tmp: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as t:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                t.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                t.addfile(info, io.BytesIO(m[1]))
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w:gz") as t:
        body = b"/etc/greet.conf\n"
        info = tarfile.TarInfo("./conffiles")
        info.size = len(body)
        t.addfile(info, io.BytesIO(body))
    work = tmp / "deb"
    work.mkdir(exist_ok=True)
    (work / "debian-binary").write_text("2.0\n")
    (work / "control.tar.gz").write_bytes(control.getvalue())
    (work / "data.tar.gz").write_bytes(data.getvalue())
    out = tmp / "p.deb"
    out.unlink(missing_ok=True)
    subprocess.run(["ar", "rc", str(out), "debian-binary", "control.tar.gz", "data.tar.gz"],
                   cwd=work, check=True)
    return out


def test_good_package(tmp_path: Path) -> None:
    link = tarfile.TarInfo("./usr/bin/hi")
    link.type, link.linkname = tarfile.SYMTYPE, "../lib/hi"
    p = deb(tmp_path, [("./etc/greet.conf", b"x=1\n"), ("./usr/lib/hi", b"hi\n"), link])
    u = unpack(p, tmp_path / "root", "deb")
    assert (tmp_path / "root/usr/bin/hi").read_bytes() == b"hi\n"
    assert u.conffiles == ["/etc/greet.conf"] and "/usr/lib/hi" in u.files


def test_skipped_prefixes_not_written(tmp_path: Path) -> None:
    """The bootstrap unpack of a full template leaves documentation to dpkg:
    skipped members (and hard links to them) are checked, not written."""
    hard = tarfile.TarInfo("./usr/bin/readme")
    hard.type, hard.linkname = tarfile.LNKTYPE, "./usr/share/doc/p/README"
    p = deb(tmp_path, [("./usr/share/doc/p/README", b"doc\n"), ("./usr/bin/p", b"p\n"), hard])
    u = unpack(p, tmp_path / "root", "deb", skip=("usr/share/doc/",))
    assert (tmp_path / "root/usr/bin/p").read_bytes() == b"p\n"
    assert not (tmp_path / "root/usr/share/doc").exists()
    assert not (tmp_path / "root/usr/bin/readme").exists()
    assert "/usr/share/doc/p/README" in u.files
    with pytest.raises(UnpackError, match="outside the root"):
        unpack(deb(tmp_path, [("./usr/share/doc/../../../evil", b"x")]), tmp_path / "r2",
               "deb", skip=("usr/share/doc/",))


@pytest.mark.parametrize("member", ["../../evil", "/abs/evil", "./usr/../../evil"])
def test_escaping_members_refused(tmp_path: Path, member: str) -> None:
    p = deb(tmp_path, [(member, b"pwned\n")])
    with pytest.raises(UnpackError, match="outside the root"):
        unpack(p, tmp_path / "r" / "root", "deb")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "r" / "evil").exists()


def test_escaping_symlink_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("./lnk")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../outside"
    with pytest.raises(UnpackError, match="escapes the root"):
        unpack(deb(tmp_path, [link]), tmp_path / "root", "deb")


def test_not_a_package(tmp_path: Path) -> None:
    bad = tmp_path / "x.deb"
    bad.write_bytes(b"!<arch>\nnot really")
    with pytest.raises((UnpackError, ArchiveError)):
        unpack(bad, tmp_path / "root", "deb")
    assert not list((tmp_path / "root").rglob("*"))


def _hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _outside(tmp: Path) -> Path:
    """A directory of the test's own, outside the root, that must stay empty."""
    out = tmp / "outside"
    out.mkdir(exist_ok=True)
    (out / "victim").write_text("original\n")
    return out


@pytest.mark.parametrize("target", ["../../outside/victim", "./usr/../../outside/victim",
                                    "{outside}/victim"])
def test_escaping_hardlink_refused(tmp_path: Path, target: str) -> None:
    """A hard link to a file outside the root would let a later member (or the
    link itself) overwrite that file: refused before anything is written."""
    outside = _outside(tmp_path)
    link = _hardlink("./etc/victim", target.format(outside=outside))
    p = deb(tmp_path, [link, ("./etc/victim", b"pwned\n")])
    with pytest.raises(UnpackError, match="outside the root"):
        unpack(p, tmp_path / "root", "deb")
    assert (outside / "victim").read_text() == "original\n"
    assert not list((tmp_path / "root").rglob("*"))


@pytest.mark.parametrize("target", ["{outside}", "../../../outside", "../usr/../.."])
def test_write_through_symlink_refused(tmp_path: Path, target: str) -> None:
    """A symlink member pointing outside (absolute, or climbing), then a file
    written through it: refused, nothing lands in the directory it points at."""
    outside = _outside(tmp_path)
    link = _symlink("./lnk", target.format(outside=outside))
    p = deb(tmp_path, [link, ("./lnk/evil", b"pwned\n"), ("./lnk/victim", b"pwned\n")])
    with pytest.raises(UnpackError, match=r"escapes the root|through the symlink"):
        unpack(p, tmp_path / "root", "deb")
    assert sorted(x.name for x in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == "original\n"


def test_file_replacing_a_symlink_refused(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    p = deb(tmp_path, [_symlink("./etc/victim", str(outside / "victim")),
                       ("./etc/victim", b"pwned\n")])
    with pytest.raises(UnpackError, match="through the symlink"):
        unpack(p, tmp_path / "root", "deb")
    assert (outside / "victim").read_text() == "original\n"


def test_hardlink_inside_root_is_kept(tmp_path: Path) -> None:
    p = deb(tmp_path, [("./usr/bin/a", b"tool\n"), _hardlink("./usr/bin/b", "./usr/bin/a")])
    u = unpack(p, tmp_path / "root", "deb")
    assert (tmp_path / "root/usr/bin/b").read_bytes() == b"tool\n"
    assert "/usr/bin/b" in u.files


def test_decompression_bomb_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A member that unpacks to far more than the package's size times the
    allowed ratio is refused before anything is written (the floor is lowered
    here so that the test stays small: 16 MB of zeros in a ~16 KB package)."""
    import pkgdepot.build.unpack as unpack_mod

    monkeypatch.setattr(unpack_mod, "MIN_UNPACK_LIMIT", 1 << 20)
    p = deb(tmp_path, [("./zeros", bytes(16 << 20))])
    assert p.stat().st_size < 100 << 10
    with pytest.raises(UnpackError, match="decompression bomb"):
        unpack(p, tmp_path / "root", "deb")
    assert not (tmp_path / "root/zeros").exists()


def test_cpio_payload_checked_too(tmp_path: Path) -> None:
    """rpm payloads are cpio archives: the member check (which unpack runs on
    the whole rpm, as libarchive reads it) refuses the same members."""
    import libarchive

    import pkgdepot.build.unpack as unpack_mod

    outside = _outside(tmp_path)
    payload = tmp_path / "payload.cpio"
    with libarchive.file_writer(str(payload), "cpio_newc") as w:
        w.add_file_from_memory("../outside/victim", 6, b"pwned\n")
    with pytest.raises(UnpackError, match="outside the root"):
        unpack_mod._check_members(payload.read_bytes(), "payload.cpio", 1 << 20)
    with pytest.raises(UnpackError, match="not an rpm"):  # a bare cpio is not an rpm
        unpack(payload, tmp_path / "r" / "root", "rpm")
    assert (outside / "victim").read_text() == "original\n"


@pytest.mark.parametrize("data", [b"", b"\xed\xab\xee\xdb" + b"\0" * 200, b"070701" + b"z" * 200,
                                  b"!<arch>\ndata.tar.xz/    0 0 0 100644 10 `\n0123456789"])
def test_garbage_is_a_clear_error(tmp_path: Path, data: bytes) -> None:
    bad = tmp_path / "x.pkg"
    bad.write_bytes(data)
    for family in ("deb", "rpm"):
        with pytest.raises(UnpackError):
            unpack(bad, tmp_path / family, family)
        assert not list((tmp_path / family).rglob("*"))


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd", "none"])
def test_every_data_tar_compression(tmp_path: Path, compression: str) -> None:
    """data.tar is decompressed once (to check, then extract): every
    compression dpkg-deb writes comes out whole."""
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text("Package: x\nVersion: 1\nArchitecture: all\n"
                                         "Maintainer: t <t@example.org>\nDescription: x\n")
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/x").write_bytes(b"x" * 100_000)
    out = tmp_path / "x.deb"
    subprocess.run(["dpkg-deb", f"-Z{compression}", "--build", str(tree), str(out)],
                   check=True, capture_output=True)
    u = unpack(out, tmp_path / "root", "deb")
    assert (tmp_path / "root/usr/bin/x").read_bytes() == b"x" * 100_000
    assert u.files == ["/usr", "/usr/bin", "/usr/bin/x"] and u.control["Package"] == "x"
