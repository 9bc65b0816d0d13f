"""`pkgdepot import DIR`: existing package files into the store.

An old apt-cacher-ng cache directory or a /var/cache/apt/archives holds
packages that clients would otherwise download again. Each .deb/.udeb/.rpm
file under DIR is hashed; it is kept only if an index the depot has seen
(Packages, primary.xml: the vouches in the catalog) lists a file with that
hash and size, and it is then recorded under every cache key that index
gives it, exactly as if a client had fetched it. Everything else is skipped
with a reason. DIR is only read.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pkgdepot.errors import PkgdepotError
from pkgdepot.progress import Progress, human_bytes
from pkgdepot.store import Entry
from pkgdepot.store.fs import FsStore

PACKAGE_SUFFIXES = (".deb", ".udeb", ".ddeb", ".rpm", ".drpm")
CHUNK = 1 << 20

NOT_VOUCHED = "no index the depot has seen lists this content (unknown or changed file)"
PRESENT = "already in the store"
NOT_PACKAGE = "not a .deb/.udeb/.rpm file"
SYMLINK = "a symbolic link (not followed)"
UNREADABLE = "unreadable"
CHANGED = "changed while it was imported"

VouchMap = dict[tuple[str, str], list[tuple[str, int | None]]]  # (algo, hex) -> [(key, size)]


@dataclass(slots=True)
class ImportResult:
    imported: int = 0
    bytes: int = 0
    entries: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def skip(self, reason: str, path: Path) -> None:
        self.skipped[reason] += 1
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(str(path))

    def report(self) -> str:
        lines = [f"imported {self.imported} file(s), {human_bytes(self.bytes)} "
                 f"({self.entries} cache entries)"]
        for reason, n in self.skipped.most_common():
            lines.append(f"skipped {n}: {reason}")
            lines += [f"    {p}" for p in self.examples[reason]]
            if n > len(self.examples[reason]):
                lines.append(f"    ... and {n - len(self.examples[reason])} more")
        return "\n".join(lines)


def _vouches(db: sqlite3.Connection) -> VouchMap:
    out: VouchMap = defaultdict(list)
    for key, size, algo, digest in db.execute("SELECT key, size, algo, digest FROM vouches"):
        if key.endswith(PACKAGE_SUFFIXES):
            out[(algo, digest)].append((key, size))
    return out


def _files(directory: Path, result: ImportResult) -> list[tuple[Path, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink():
                result.skip(SYMLINK, path)
            elif not name.endswith(PACKAGE_SUFFIXES):
                result.skip(NOT_PACKAGE, path)
            else:
                try:
                    out.append((path, path.stat().st_size))
                except OSError:
                    result.skip(UNREADABLE, path)
    return out


def _digests(path: Path, algos: set[str], copy_to: Path | None = None) -> dict[str, str]:
    """Hash a file with every algorithm (sha256 always); with `copy_to`, write
    it there while reading."""
    hashes = {a: hashlib.new(a) for a in algos | {"sha256"}}
    with open(path, "rb") as f, (open(copy_to, "wb") if copy_to else open(os.devnull, "wb")) \
            as out:
        while chunk := f.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
            out.write(chunk)
        if copy_to is not None:
            out.flush()
            os.fsync(out.fileno())
    return {a: h.hexdigest() for a, h in hashes.items()}


def _matches(vouches: VouchMap, digests: dict[str, str], size: int) -> list[str]:
    keys: list[str] = []
    for algo, hexdigest in digests.items():
        keys += [k for k, vsize in vouches.get((algo, hexdigest), ())
                 if vsize is None or vsize == size]
    return sorted(set(keys))


async def import_dir(store: FsStore, directory: Path) -> ImportResult:
    if not directory.is_dir():
        raise PkgdepotError(f"{directory} is not a directory",
                            hint="give the directory that holds the .deb/.rpm files, e.g. "
                                 "/var/cache/apt/archives or apt-cacher-ng's cache directory")
    result = ImportResult()
    vouches = await store.run_db(_vouches)
    if not vouches:
        raise PkgdepotError("the depot has not seen any package index yet, so no file can be "
                            "checked", hint="let a client run `apt-get update` or `dnf "
                                            "makecache` through the depot first, or sync a "
                                            "mirror; then import again")
    algos = {algo for algo, _h in vouches}
    files = await asyncio.to_thread(_files, directory, result)
    with Progress("import", sum(size for _p, size in files)) as bar:
        for path, size in files:
            await _import_one(store, vouches, algos, path, size, result)
            bar.advance(size)
    return result


async def _import_one(store: FsStore, vouches: VouchMap, algos: set[str], path: Path,
                      size: int, result: ImportResult) -> None:
    try:
        digests = await asyncio.to_thread(_digests, path, algos)
    except OSError:
        result.skip(UNREADABLE, path)
        return
    keys = _matches(vouches, digests, size)
    if not keys:
        result.skip(NOT_VOUCHED, path)
        return
    sha = digests["sha256"]
    new = [k for k in keys if (e := await store.load(k)) is None or e.sha256 != sha]
    if not new:
        result.skip(PRESENT, path)
        return
    temp = await asyncio.to_thread(store.new_temp)
    try:
        copied = await asyncio.to_thread(_digests, path, {"sha256"}, temp)
        if copied["sha256"] != sha:
            result.skip(CHANGED, path)
            return
        now = time.time()
        entries = [Entry(k, sha, size, now, now) for k in new]
        await store.commit(temp, entries[0], synced=True)
        if entries[1:]:
            await store.commit_entries(entries[1:])
    except OSError as e:
        raise PkgdepotError(f"cannot write into the store: {e}",
                            hint="is the data directory full or read-only?") from e
    finally:
        temp.unlink(missing_ok=True)
    result.imported += 1
    result.bytes += size
    result.entries += len(new)


__all__ = ["ImportResult", "import_dir"]
