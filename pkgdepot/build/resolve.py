"""Resolution with libsolv: a package list -> the exact set of packages to
install, written as a lock file that rebuilds exactly that set.

Debian's python3-solv has both deb and rpm semantics (Depends/Pre-Depends,
Provides, Conflicts/Breaks, Multi-Arch; rpm rich dependencies), so the
distribution's own rules decide, not ours.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pkgdepot.errors import PkgdepotError


class ResolveError(PkgdepotError):
    """The package list cannot be satisfied; the message says why in plain words."""

    status = 400


@dataclass(frozen=True, order=True)
class Locked:
    name: str
    version: str
    arch: str
    repo: str        # the base URL the package comes from
    location: str    # relative to `repo`
    sha256: str
    size: int

    def key(self) -> str:
        return f"{self.name}={self.version} ({self.arch})"


@dataclass(frozen=True)
class Index:
    """One package index of one repository, uncompressed on disk."""

    repo: str
    path: Path


def _pool(disttype: str, arch: str, indexes: Iterable[Index]) -> tuple[Any, dict[int, str]]:
    import solv

    pool = solv.Pool()
    pool.setdisttype(solv.Pool.DISTTYPE_DEB if disttype == "deb" else solv.Pool.DISTTYPE_RPM)
    pool.setarch(arch)
    repo_of: dict[int, str] = {}
    for i, idx in enumerate(indexes):
        r = pool.add_repo(f"r{i}")
        f = solv.xfopen(str(idx.path))
        if disttype == "deb":
            r.add_debpackages(f)
        else:
            r.add_rpmmd(f, None, 0)
        f.close()
        repo_of[r.id] = idx.repo
    pool.addfileprovides()
    pool.createwhatprovides()
    pool.installed = pool.add_repo("installed")  # an empty system
    pool.createwhatprovides()
    return pool, repo_of


def deb_sizes(indexes: Iterable[Index]) -> dict[tuple[str, str], int]:
    """(repository, Filename) -> Size of every stanza of the deb indexes:
    libsolv keeps no download size for deb repositories."""
    from pkgdepot.formats.apt import _tagfile_sections

    out = {}
    for idx in indexes:
        for s in _tagfile_sections(idx.path, idx.path.name, ("Filename", "Size")):
            if s.get("Size", "").isdigit():
                out[idx.repo, s.get("Filename", "")] = int(s["Size"])
    return out


def resolve(disttype: str, arch: str, indexes: list[Index], wanted: Mapping[str, str | None],
            required: Iterable[str] = (), replacements: Mapping[str, str] | None = None,
            excluded: Iterable[str] = ()) -> list[Locked]:
    """Resolve `wanted` (name -> pinned version or None) plus `required` names.
    A replacement (name -> stand-in) installs the stand-in and keeps the
    original out; `excluded` names are kept out. Raises ResolveError with
    libsolv's explanation."""
    import solv

    pool, repo_of = _pool(disttype, arch, indexes)
    replacements = dict(replacements or {})
    jobs = []
    missing = []
    names = dict.fromkeys(required)
    names.update(wanted)
    for name, pin in names.items():
        if name in replacements:
            name, pin = replacements[name], None
        dep = pool.Dep(name)
        if pin:
            dep = dep.Rel(solv.REL_EQ, pool.Dep(pin))
        if not pool.whatprovides(dep):
            missing.append(name + (f"={pin}" if pin else ""))
            continue
        jobs.append(pool.Job(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_SOLVABLE_PROVIDES,
                             dep.id))
    if missing:
        raise ResolveError("no package in the repositories provides: " + ", ".join(missing),
                           hint="check the names and pins, and the repositories of the "
                                "template (is the right suite or snapshot configured?)")
    for name in [*replacements, *excluded]:
        for s in pool.select(name, solv.Selection.SELECTION_NAME).solvables():
            jobs.append(pool.Job(solv.Job.SOLVER_LOCK | solv.Job.SOLVER_SOLVABLE, s.id))
    solver = pool.Solver()
    solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, 1)
    problems = solver.solve(jobs)
    if problems:
        lines = []
        for p in problems:
            lines.append(f"- {p}")
            for sol in p.solutions()[:3]:
                lines.append(f"    possible fix: {sol}")
        raise ResolveError("the package list cannot be installed:\n" + "\n".join(lines),
                           hint="remove or change the conflicting entries (a trailing '-' "
                                "in a list removes a package inherited from above)")
    sizes = deb_sizes(indexes) if disttype == "deb" else {}
    out = []
    for s in solver.transaction().newsolvables():
        loc, _ = s.lookup_location()
        ck = s.lookup_checksum(solv.SOLVABLE_CHECKSUM)
        if ck is None or ck.typestr() != "sha256":
            raise ResolveError(f"{s.name} {s.evr}: the index gives no sha256 checksum")
        repo = repo_of[s.repo.id]
        size = sizes.get((repo, loc)) or int(s.lookup_num(solv.SOLVABLE_DOWNLOADSIZE))
        out.append(Locked(s.name, s.evr, s.arch, repo, loc, ck.hex(), size))
    return sorted(out)


def write_lock(path: Path, packages: list[Locked], meta: Mapping[str, object]) -> None:
    data = {"meta": dict(meta), "packages": [asdict(p) for p in sorted(packages)]}
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def read_lock(path: Path) -> tuple[list[Locked], dict[str, object]]:
    try:
        data = json.loads(path.read_text())
        pkgs = [Locked(**p) for p in data["packages"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ResolveError(f"{path}: not a valid lock file ({e})") from e
    return pkgs, dict(data.get("meta", {}))
