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
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libarchive
import libarchive.extract as lx
from libarchive.entry import ArchiveEntry
from libarchive.exception import ArchiveError

from pkgdepot.errors import PkgdepotError

SECURE = (lx.EXTRACT_SECURE_NODOTDOT | lx.EXTRACT_SECURE_NOABSOLUTEPATHS
          | lx.EXTRACT_SECURE_SYMLINKS | lx.EXTRACT_PERM | lx.EXTRACT_TIME)
MAX_MEMBER = 4 << 30
#: Packages shrink a few times when compressed; one whose members add up to
#: more than this many times its own size (beyond a floor) is a bomb.
MAX_UNPACK_RATIO = 100
MIN_UNPACK_LIMIT = 256 << 20
MAX_CONTROL_MEMBER = 1 << 20
RPM_MAGIC = b"\xed\xab\xee\xdb"


class UnpackError(PkgdepotError):
    status = 400


def unpack_limit(package_size: int) -> int:
    """The most bytes a package of this size may unpack to."""
    return min(16 << 30, max(MIN_UNPACK_LIMIT, package_size * MAX_UNPACK_RATIO))


@dataclass
class Unpacked:
    files: list[str] = field(default_factory=list)      # absolute paths in the target
    conffiles: list[str] = field(default_factory=list)
    control: dict[str, str] = field(default_factory=dict)  # a deb's control fields


_CWD_LOCK = threading.Lock()


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    """Extract relative to `path`: libarchive writes members relative to the
    working directory, which is one per process, so one extraction at a time
    (a second thread must never see the first one's directory, or its own
    members would land elsewhere)."""
    with _CWD_LOCK:
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


def _climbs_out(path: str, target: str) -> bool:
    """Whether a relative symlink at `path` pointing at `target` leaves the root."""
    depth = path.count("/") - 1  # the directory holding the link
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _via_link(path: str, links: set[str]) -> str | None:
    """The first directory above `path` that is one of `links`, if any."""
    i = path.find("/", 1)
    while i > 0:
        if path[:i] in links:
            return path[:i]
        i = path.find("/", i + 1)
    return None


def _check_members(data: bytes, what: str, limit: int) -> list[str]:
    """Every member's path, after refusing members that would land outside
    the root (`..`, absolute paths, symlinks or hard links that escape, or a
    write through a symlink of the same archive) and archives that unpack to
    more than `limit` bytes."""
    files = []
    links: set[str] = set()
    total = 0
    with libarchive.memory_reader(data) as archive:
        for e in archive:
            path = _member_path(e.pathname, what)
            through = _via_link(path, links)
            if through is not None or (path in links and not e.issym):
                raise UnpackError(f"{what}: member {path} would be written through the "
                                  f"symlink {through or path}: refused")
            if e.issym:
                target = e.linkpath or ""
                if not target.startswith("/") and _climbs_out(path, target):
                    raise UnpackError(f"{what}: symlink {path} -> {target} escapes the "
                                      "root: refused")
                links.add(path)
            elif e.islnk:
                target = _member_path(e.linkpath or "", what)
                if _via_link(target, links):
                    raise UnpackError(f"{what}: hard link {path} -> {e.linkpath} goes "
                                      "through a symlink: refused")
            total += max(e.size or 0, 0)
            if total > limit:
                raise UnpackError(f"{what}: unpacks to more than {limit} bytes: refused as "
                                  "a decompression bomb")
            if path != "/":
                files.append(path)
    return files


def _deb_parts(path: Path, with_data: bool = True) -> tuple[bytes, bytes]:
    control = data = b""
    with libarchive.file_reader(str(path)) as ar:
        for e in ar:
            if e.size > MAX_MEMBER:
                raise UnpackError(f"{path.name}: member {e.pathname} is too large")
            if e.pathname.startswith("control.tar"):
                control = b"".join(e.get_blocks())
                if not with_data:
                    return control, data
            elif e.pathname.startswith("data.tar") and with_data:
                data = b"".join(e.get_blocks())
    if not data:
        raise UnpackError(f"{path.name}: no {'data' if with_data else 'control'}.tar member: "
                          "not a Debian package")
    return control, data


def _decompressed(data: bytes, limit: int, what: str) -> bytes:
    """A compressed tar as a plain tar in memory, so that the member check
    and the extraction do not both decompress it. At most twice `limit`
    (the members' sizes plus tar's headers and padding) is held; more is a
    decompression bomb."""
    out = bytearray()
    with libarchive.memory_reader(data, format_name="raw", filter_name="all") as archive:
        for e in archive:
            for block in e.get_blocks():
                out += block
                if len(out) > 2 * limit:
                    raise UnpackError(f"{what}: unpacks to more than {limit} bytes: refused "
                                      "as a decompression bomb")
    return bytes(out)


def _control_member(control: bytes, name: str) -> str:
    if control:
        with libarchive.memory_reader(control) as archive:
            for e in archive:
                if e.pathname.lstrip("./") == name:
                    if (e.size or 0) > MAX_CONTROL_MEMBER:
                        raise UnpackError(f"{name} is larger than {MAX_CONTROL_MEMBER} bytes")
                    return b"".join(e.get_blocks()).decode("utf-8", "replace")
    return ""


def conffiles_of(control: bytes) -> list[str]:
    text = _control_member(control, "conffiles")
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("/")]


def control_fields(control: bytes) -> dict[str, str]:
    """The fields of a deb's control file (continuation lines joined)."""
    fields: dict[str, str] = {}
    key = ""
    for line in _control_member(control, "control").splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def deb_control(package: Path) -> dict[str, str]:
    """The control fields of a .deb, read without touching its data."""
    try:
        return control_fields(_deb_parts(package, with_data=False)[0])
    except ArchiveError as e:
        raise UnpackError(f"{package.name}: not a valid package archive: {e}") from e


def _relocate(name: str, merged: tuple[str, ...]) -> str | None:
    """On a merged-/usr root, `bin/x` lands in `usr/bin/x` (through the
    `/bin -> usr/bin` link, as dpkg would put it); the entry of the merged
    directory itself is dropped (the link stands there)."""
    rel = name[2:] if name.startswith("./") else name.lstrip("/")
    top, _, rest = rel.partition("/")
    if top not in merged:
        return name
    return f"./usr/{top}/{rest}" if rest.strip("/") else None


def _skipped(name: str, skip: tuple[str, ...]) -> bool:
    return bool(skip) and (name[2:] if name.startswith("./") else name.lstrip("/")).startswith(
        skip)


def _moved(entries: Iterable[ArchiveEntry], merged: tuple[str, ...],
           skip: tuple[str, ...]) -> Iterator[ArchiveEntry]:
    for e in entries:
        if _skipped(e.pathname, skip) or (e.islnk and _skipped(e.linkpath or "", skip)):
            continue
        path = _relocate(e.pathname, merged)
        if path is None:
            continue
        if path != e.pathname:
            e.pathname = path
        if e.islnk and e.linkpath:
            target = _relocate(e.linkpath, merged)
            if target and target != e.linkpath:
                e.linkpath = target
        yield e


def _extract(data: bytes, root: Path, merged: tuple[str, ...], skip: tuple[str, ...]) -> None:
    with _cwd(root):
        if not merged and not skip:
            lx.extract_memory(data, SECURE)
            return
        with libarchive.memory_reader(data) as archive:
            lx.extract_entries(_moved(archive, merged, skip), SECURE)


def unpack(package: Path, root: Path, family: str, merged: tuple[str, ...] = (),
           skip: tuple[str, ...] = ()) -> Unpacked:
    """Unpack one package's files into `root` (no scripts run). `merged`
    names the top directories that are links into /usr on this root; members
    under the `skip` prefixes ("usr/share/doc/") are checked but not
    written (nor hard links to them). A
    package that is not a valid archive, or whose members would land outside
    the root, raises UnpackError before anything is written."""
    root.mkdir(parents=True, exist_ok=True)
    limit = unpack_limit(package.stat().st_size)
    try:
        if family == "deb":
            control, data = _deb_parts(package)
            data = _decompressed(data, limit, package.name)
            out = Unpacked(_check_members(data, package.name, limit), conffiles_of(control),
                           control_fields(control))
        else:
            data = package.read_bytes()
            if not data.startswith(RPM_MAGIC):
                raise UnpackError(f"{package.name}: not an rpm package (no rpm lead)")
            out = Unpacked(_check_members(data, package.name, limit))
        _extract(data, root, merged, skip)
    except ArchiveError as e:
        raise UnpackError(f"{package.name}: not a valid package archive: {e}") from e
    return out
