"""What changed between two snapshots: packages added, removed, upgraded and
downgraded, read from the package indices each snapshot holds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pkgdepot.errors import PkgdepotError
from pkgdepot.formats import Backend, classify, read_rank, split_compression
from pkgdepot.snapshots import FileRef, Snapshot, Snapshots
from pkgdepot.store.fs import FsStore

log = logging.getLogger(__name__)


PackageKey = tuple[str, str]  # (name, arch)


@dataclass
class Diff:
    a: Snapshot
    b: Snapshot
    added: list[tuple[str, str, str]] = field(default_factory=list)      # name, version, arch
    removed: list[tuple[str, str, str]] = field(default_factory=list)
    upgraded: list[tuple[str, str, str, str]] = field(default_factory=list)  # name, old, new, arch
    downgraded: list[tuple[str, str, str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "from": self.a.as_dict(), "to": self.b.as_dict(),
            "added": [{"name": n, "version": v, "arch": a} for n, v, a in self.added],
            "removed": [{"name": n, "version": v, "arch": a} for n, v, a in self.removed],
            "upgraded": [{"name": n, "from": o, "to": w, "arch": a}
                         for n, o, w, a in self.upgraded],
            "downgraded": [{"name": n, "from": o, "to": w, "arch": a}
                           for n, o, w, a in self.downgraded],
        }

    def text(self) -> str:
        lines = [f"{self.a.repo}: {self.a.stamp} -> {self.b.stamp}"]
        for n, v, a in self.added:
            lines.append(f"+ {n} {v} {a}")
        for n, v, a in self.removed:
            lines.append(f"- {n} {v} {a}")
        for n, o, w, a in self.upgraded:
            lines.append(f"^ {n} {o} -> {w} {a}")
        for n, o, w, a in self.downgraded:
            lines.append(f"v {n} {o} -> {w} {a}")
        lines.append(f"{len(self.added)} added, {len(self.removed)} removed, "
                     f"{len(self.upgraded)} upgraded, {len(self.downgraded)} downgraded")
        return "\n".join(lines)


def _indices(manifest: dict[str, FileRef]) -> dict[str, tuple[str, FileRef, Backend]]:
    """One package index per directory and kind: base path -> (path, blob, backend)."""
    chosen: dict[str, tuple[int, str, FileRef, Backend]] = {}
    for path, ref in manifest.items():
        found = classify(path)
        if found is None:
            continue
        backend, _info = found
        if not backend.is_package_index(path):
            continue
        base = split_compression(path)[0]
        if backend.name == "rpm":
            base = path.rsplit("/", 1)[0] + "/primary"
        rank = read_rank(path)
        if base not in chosen or rank < chosen[base][0]:
            chosen[base] = (rank, path, ref, backend)
    return {b: (p, r, be) for b, (_rank, p, r, be) in chosen.items()}


def _listing(store: FsStore, path: str, ref: FileRef, backend: Backend) -> set[bytes]:
    """The packages of one index as `name\tarch\tversion` lines. Worked out
    once per index blob and kept beside the blobs (`derived/`): blobs never
    change, so neither does this, and a diff then reads two small files
    instead of parsing two indices."""
    kept = store.derived_path("pkglist", ref[0])
    try:
        return set(kept.read_bytes().split(b"\n")) - {b""}
    except FileNotFoundError:
        pass
    blob = Path(store.blob_path(ref[0]))
    return keep_listing(store, ref[0], ((p.name, p.arch, p.version)
                                        for p in backend.packages(path, blob)))


def keep_listing(store: FsStore, sha256: str, entries: Iterable[tuple[str, str, str]]
                 ) -> set[bytes]:
    """Keep the package list of the index blob `sha256` from its (name,
    architecture, version) entries; for whoever read the index anyway."""
    lines = {f"{n}\t{a}\t{v}".encode() for n, a, v in entries
             if not _BAD.intersection(n + a + v)}
    store.put_derived(store.derived_path("pkglist", sha256), b"\n".join(sorted(lines)))
    return lines


_BAD = frozenset("\t\n\r")


def _read(store: FsStore, indices: dict[str, tuple[str, FileRef, Backend]]
          ) -> tuple[set[bytes], Backend | None]:
    lines: set[bytes] = set()
    backend: Backend | None = None
    for path, ref, be in indices.values():
        backend = be
        lines |= _listing(store, path, ref, be)
    return lines, backend


def _newest(lines: Iterable[bytes], keys: set[bytes], backend: Backend
            ) -> dict[PackageKey, str]:
    """The newest version of each of these `name\tarch` keys among the lines
    (an index may list several versions of a package)."""
    newest: dict[PackageKey, str] = {}
    for line in lines:
        head, _, tail = line.rpartition(b"\t")
        if head not in keys:
            continue
        name, arch = head.decode().split("\t")
        version = tail.decode()
        old = newest.get((name, arch))
        if old is None or (old != version and backend.compare_versions(version, old) > 0):
            newest[(name, arch)] = version
    return newest


async def prepare(store: FsStore, files: Mapping[str, FileRef | None]) -> None:
    """Work out the package lists of a new state's indices now (in a thread),
    so that a later diff reads two small files. Best effort: a diff works
    them out itself when they are missing."""
    for path, ref, backend in _indices({p: r for p, r in files.items() if r}).values():
        if store.derived_path("pkglist", ref[0]).exists():
            continue
        try:
            await asyncio.to_thread(_listing, store, path, ref, backend)
        except (PkgdepotError, OSError) as e:
            log.warning("package list of %s not kept: %s", path, e)


async def diff(store: FsStore, snapshots: Snapshots, repo: str, a: str, b: str) -> Diff:
    sa, sb = await snapshots.resolve(repo, a), await snapshots.resolve(repo, b)
    ma, mb = await snapshots.manifest(repo, sa.id), await snapshots.manifest(repo, sb.id)
    ia, ib = _indices(ma), _indices(mb)
    result = Diff(sa, sb)
    if {k: v[1] for k, v in ia.items()} == {k: v[1] for k, v in ib.items()}:
        return result  # the same package lists: nothing to read
    (la, be_a), (lb, be_b) = await asyncio.gather(asyncio.to_thread(_read, store, ia),
                                                  asyncio.to_thread(_read, store, ib))
    backend = be_a or be_b
    if backend is None:
        return result
    # Only lines in one state and not the other can change anything: compare
    # the two sets of lines wholesale, then look closer at the few that differ.
    only_a, only_b = la - lb, lb - la
    keys = {line.rpartition(b"\t")[0] for line in only_a | only_b}
    va, vb = _newest(la, keys, backend), _newest(lb, keys, backend)
    for key in sorted(va.keys() | vb.keys()):
        name, arch = key
        old, new = va.get(key), vb.get(key)
        if old is None and new is not None:
            result.added.append((name, new, arch))
        elif new is None and old is not None:
            result.removed.append((name, old, arch))
        elif old is not None and new is not None and old != new:
            cmp = backend.compare_versions(new, old)
            if cmp > 0:
                result.upgraded.append((name, old, new, arch))
            elif cmp < 0:
                result.downgraded.append((name, old, new, arch))
    return result

