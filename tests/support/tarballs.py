"""Comparing tarballs member by member (diffoscope's first question, without
diffoscope): what two builds that should be byte-identical do not share."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path

import zstandard


def zst_members(path: Path) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    """The members of a .tar.zst in order, each with its contents."""
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as z, \
            tarfile.open(fileobj=z, mode="r|") as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isreg() else None
            yield m, f.read() if f is not None else b""


def tar_members(path: Path) -> dict[str, tuple[object, ...]]:
    """Every member of a .tar.zst: type, mode, owners, time, link target,
    size, the sha256 of its contents and its PAX headers."""
    return {m.name: (m.type, oct(m.mode), m.uid, m.gid, m.mtime, m.linkname, m.size,
                     hashlib.sha256(data).hexdigest(), sorted(m.pax_headers.items()))
            for m, data in zst_members(path)}


def tar_differences(a: Path, b: Path) -> list[str]:
    """The members two tarballs do not share as they are, one line each."""
    ma, mb = tar_members(a), tar_members(b)
    lines = [f"only in {p.name}: {n}" for p, only in ((a, ma.keys() - mb.keys()),
                                                      (b, mb.keys() - ma.keys()))
             for n in sorted(only)]
    lines += [f"{n}: {ma[n]} != {mb[n]}" for n in sorted(ma.keys() & mb.keys())
              if ma[n] != mb[n]]
    if not lines and list(ma) != list(mb):
        lines.append("the same members in another order")
    return lines
