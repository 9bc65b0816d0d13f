"""Dependency closure with libsolv (Debian's python3-solv, which knows both
deb and rpm semantics)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)
Nevra = tuple[str, str, str]  # name, evr, arch


def closure(disttype: str, indexes: Iterable[Path], patterns: Iterable[str], arch: str,
            with_deps: bool = True) -> tuple[set[Nevra], list[str]]:
    """The packages matching the name patterns (globs), and with `with_deps`
    what they need to install, as libsolv resolves it. `indexes` are
    uncompressed Packages files (deb) or primary.xml files (rpm). Returns the
    selection and warnings (patterns that match nothing, problems)."""
    import solv

    pool = solv.Pool()
    pool.setdisttype(solv.Pool.DISTTYPE_DEB if disttype == "deb" else solv.Pool.DISTTYPE_RPM)
    pool.setarch(arch)
    repo = pool.add_repo("mirror")
    for path in indexes:
        f = solv.xfopen(str(path))
        if disttype == "deb":
            repo.add_debpackages(f)
        else:
            repo.add_rpmmd(f, None, 0)
        f.close()
    pool.addfileprovides()
    pool.createwhatprovides()
    selected: set[Nevra] = set()
    warnings: list[str] = []
    jobs = []
    flags = solv.Selection.SELECTION_NAME | solv.Selection.SELECTION_GLOB
    for pat in patterns:
        sel = pool.select(pat, flags)
        if sel.isempty():
            warnings.append(f"filter {pat!r} matches no package")
            continue
        for s in sel.solvables():
            selected.add((s.name, s.evr, s.arch))
        jobs.append(sel.jobs(solv.Job.SOLVER_INSTALL))
    if with_deps:
        for job in jobs:
            solver = pool.Solver()
            problems = solver.solve(job)
            if problems:
                for p in problems:
                    warnings.append(f"dependency problem: {p}")
                continue
            for s in solver.transaction().newsolvables():
                selected.add((s.name, s.evr, s.arch))
    return selected, warnings
