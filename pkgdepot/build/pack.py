"""Packing a built root as a tarball, byte for byte reproducible: members in
sorted order, numeric owners only, and with SOURCE_DATE_EPOCH every time
clamped to it (https://reproducible-builds.org/specs/source-date-epoch/)."""

from __future__ import annotations

import gzip
import lzma
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pkgdepot.errors import PkgdepotError

FORMATS = ("dir", "tar", "tar.gz", "tar.xz", "tar.zst")


class PackError(PkgdepotError):
    status = 400


def source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    if not value.isdigit():
        raise PackError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds")
    return int(value)


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            yield base / name


def _open(out: Path, fmt: str) -> Any:
    """A writable binary stream (compressing as the format says)."""
    raw = open(out, "wb")  # noqa: SIM115 (closed by the caller through the wrapper)
    if fmt == "tar.gz":
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
    if fmt == "tar.xz":
        return lzma.LZMAFile(raw, "wb", preset=6)
    if fmt == "tar.zst":
        import zstandard

        return zstandard.ZstdCompressor(level=10).stream_writer(raw, closefd=True)
    return raw


def pack(root: Path, out: Path, fmt: str, epoch: int | None = None) -> Path:
    """Write `root` as a tarball at `out` in format `fmt`."""
    if fmt not in FORMATS or fmt == "dir":
        raise PackError(f"unknown output format {fmt!r}", hint="one of: " + ", ".join(FORMATS))
    stream = _open(out, fmt)
    try:
        with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path in _walk(root):
                rel = "./" + str(path.relative_to(root))
                info = tar.gettarinfo(str(path), arcname=rel)
                info.uname = info.gname = ""
                # whole seconds: a fraction would add a PAX header to every member
                info.mtime = int(info.mtime) if epoch is None else min(int(info.mtime), epoch)
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    finally:
        stream.close()
    return out


def clamp_times(root: Path, epoch: int) -> None:
    """Clamp every mtime under `root` to `epoch` (directories included)."""
    for path in [*_walk(root), root]:
        st = path.lstat()
        if st.st_mtime > epoch:
            os.utime(path, (epoch, epoch), follow_symlinks=False)
