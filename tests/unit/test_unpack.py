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
