"""Unpacking packages with libarchive: the data of a .deb (an ar archive
holding data.tar.*) or the cpio payload of an .rpm, into a root directory.

libarchive's secure extraction refuses members with `..`, absolute paths and
writes through symbolic links; we also refuse them outright before
extracting, so a hostile package fails the build with a clear error instead
of being half-unpacked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libarchive
import libarchive.extract as lx

from pkgdepot.errors import PkgdepotError

SECURE = (lx.EXTRACT_SECURE_NODOTDOT | lx.EXTRACT_SECURE_NOABSOLUTEPATHS
          | lx.EXTRACT_SECURE_SYMLINKS | lx.EXTRACT_PERM | lx.EXTRACT_TIME)
MAX_MEMBER = 4 << 30


class UnpackError(PkgdepotError):
    status = 400


@dataclass
class Unpacked:
    files: list[str] = field(default_factory=list)      # absolute paths in the target
    conffiles: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _member_path(name: str, what: str) -> str:
    rel = name[2:] if name.startswith("./") else name
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise UnpackError(f"{what}: member {name!r} would land outside the root: refused")
    return "/" + "/".join(parts)


def _check_members(data: bytes, what: str) -> list[str]:
    files = []
    with libarchive.memory_reader(data) as archive:
        for e in archive:
            path = _member_path(e.pathname, what)
            if e.issym and e.linkpath and not e.linkpath.startswith("/"):
                # a relative link may climb, but never above the root
                depth = path.count("/") - 1
                climbs = e.linkpath.split("/").count("..")
                if climbs > depth:
                    raise UnpackError(f"{what}: symlink {path} -> {e.linkpath} escapes the "
                                      "root: refused")
            if path != "/":
                files.append(path)
    return files


def _deb_parts(path: Path) -> tuple[bytes, bytes]:
    control = data = b""
    with libarchive.file_reader(str(path)) as ar:
        for e in ar:
            if e.size > MAX_MEMBER:
                raise UnpackError(f"{path.name}: member {e.pathname} is too large")
            if e.pathname.startswith("control.tar"):
                control = b"".join(e.get_blocks())
            elif e.pathname.startswith("data.tar"):
                data = b"".join(e.get_blocks())
    if not data:
        raise UnpackError(f"{path.name}: no data.tar member: not a Debian package")
    return control, data


def conffiles_of(control: bytes) -> list[str]:
    if not control:
        return []
    with libarchive.memory_reader(control) as archive:
        for e in archive:
            if e.pathname.lstrip("./") == "conffiles":
                text = b"".join(e.get_blocks()).decode("utf-8", "replace")
                return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("/")]
    return []


def unpack(package: Path, root: Path, family: str) -> Unpacked:
    """Unpack one package's files into `root` (no scripts run)."""
    root.mkdir(parents=True, exist_ok=True)
    if family == "deb":
        control, data = _deb_parts(package)
        out = Unpacked(_check_members(data, package.name), conffiles_of(control))
        with _cwd(root):
            lx.extract_memory(data, SECURE)
        return out
    data = package.read_bytes()
    out = Unpacked(_check_members(data, package.name))
    with _cwd(root):
        lx.extract_memory(data, SECURE)
    return out
