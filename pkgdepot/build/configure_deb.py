"""Configuring a Debian-family root with the target's own dpkg, the way
debootstrap and mmdebstrap do it: the essential set (Essential: yes and what
it depends on) is unpacked first by us (libarchive), so that dpkg and the
tools maintainer scripts use can run in the root; then the target's dpkg
installs the essential set (`dpkg --force-depends --install`), unpacks all
the other packages straight from their .deb files in one call, in
dependency order, and `dpkg --configure -a` sets them up. Maintainer scripts
run; a policy-rc.d keeps services from starting; dpkg runs with
force-unsafe-io (also for the dpkg that scripts call) and no fsync, as
debootstrap and mmdebstrap do; the package database is written by the
target's dpkg alone."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pkgdepot.build.chroot import (
    ChrootError,
    ConfigureError,
    excerpt,
    failed_packages,
    run_in,
    stage,
    tail,
)

ENV = {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
DPKG = ["dpkg", "--force-unsafe-io", "--force-confold"]
POLICY_RC_D = "usr/sbin/policy-rc.d"
DEBS_DIR = "var/cache/pkgdepot-debs"
UNSAFE_IO = "etc/dpkg/dpkg.cfg.d/pkgdepot-build-unsafe-io"
#: What the essential set's maintainer scripts never need before dpkg itself
#: installs it: not unpacked by us beforehand.
NOT_NEEDED_TO_BOOT = ("usr/share/doc/", "usr/share/man/", "usr/share/locale/",
                      "usr/share/info/", "usr/share/zoneinfo/")
STEP = re.compile(r"^(?:Unpacking|Setting up) ([^\s:]+)")


def merged_usr_dirs(arch: str) -> tuple[str, ...]:
    """The top directories that are links into /usr (as debootstrap makes them)."""
    return ("bin", "sbin", "lib") + (("lib64",) if arch in ("amd64", "ppc64el", "s390x")
                                     else ())


def prepare(root: Path, merged: Iterable[str]) -> None:
    """Before anything is unpacked: the merged-/usr links."""
    for d in merged:
        (root / "usr" / d).mkdir(parents=True, exist_ok=True)
        (root / d).symlink_to(f"usr/{d}")


def _deps(fields: Mapping[str, str]) -> list[list[str]]:
    groups = []
    for key in ("Pre-Depends", "Depends"):
        for group in filter(None, (g.strip() for g in fields.get(key, "").split(","))):
            groups.append([re.split(r"[\s(:]", a.strip(), maxsplit=1)[0]
                           for a in group.split("|")])
    return groups


def _provides(controls: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, f in controls.items():
        out[name] = name
        for p in f.get("Provides", "").split(","):
            if p.strip():
                out.setdefault(re.split(r"[\s(]", p.strip(), maxsplit=1)[0], name)
    return out


def order(controls: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Package names, each after what it (pre-)depends on (cycles broken)."""
    provides = _provides(controls)
    out: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        seen.add(name)
        for group in _deps(controls[name]):
            dep = next((provides[a] for a in group if a in provides), None)
            if dep is not None and dep not in seen:
                visit(dep)
        out.append(name)

    for name in sorted(controls):
        if name not in seen:
            visit(name)
    return out


def essential_set(controls: Mapping[str, Mapping[str, str]]) -> set[str]:
    """Essential packages and everything they (pre-)depend on."""
    provides = _provides(controls)
    todo = [n for n, f in controls.items() if f.get("Essential") == "yes"]
    seen = set(todo)
    while todo:
        for group in _deps(controls[todo.pop()]):
            dep = next((provides[a] for a in group if a in provides), None)
            if dep is not None and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _dpkg(root: Path, args: list[str], what: str,
          step: Callable[[str], None] | None = None) -> str:
    try:
        return run_in(root, [*DPKG, *args], ENV, what, step)
    except ChrootError as e:
        names = failed_packages(e.output)
        if names:
            raise ConfigureError(
                f"{what}: {', '.join(names)} could not be set up by the target's dpkg "
                f"(a maintainer script failed):\n"
                + "\n".join(excerpt(e.output, n) for n in names),
                hint="the script's output is above; fix or replace the package "
                     "(replacements in build.toml), or build with --appliance") from e
        raise


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def configure(root: Path, debs: Mapping[str, Path],
              controls: Mapping[str, Mapping[str, str]],
              progress: Callable[[int], None] | None = None) -> None:
    """Install the packages `debs` (name -> .deb file, with their control
    fields) with the dpkg inside `root`, where at least the essential set is
    unpacked already. `progress` is called with 1 for every package dpkg
    unpacks and every package it sets up (2 per package in all)."""
    if not (root / "usr/bin/dpkg").exists():
        raise ConfigureError(f"{root} has no dpkg: the target cannot configure itself",
                             hint="add dpkg to the package list, or use --appliance")
    db = root / "var/lib/dpkg"
    for d in ("info", "updates", "triggers", "alternatives"):
        (db / d).mkdir(parents=True, exist_ok=True)
    for f in ("status", "available"):
        (db / f).write_text("")
    added = [_write(root, POLICY_RC_D, "#!/bin/sh\n# pkgdepot build: no services start "
                    "while building\nexit 101\n", 0o755),
             _write(root, UNSAFE_IO, "# pkgdepot build: no fsync while building\n"
                    "force-unsafe-io\n")]

    def step(line: str) -> None:
        if progress is not None and STEP.match(line):
            progress(1)

    paths = dict(zip(sorted(debs), stage(root, debs, DEBS_DIR, ".deb"), strict=True))
    try:
        ordered = order(controls)
        essential = essential_set(controls)
        first = [paths[n] for n in ordered if n in essential]
        rest = [paths[n] for n in ordered if n not in essential]
        _dpkg(root, ["--force-depends", "--install", *first], "installing the essential set",
              step)
        if rest:
            _dpkg(root, ["--force-depends", "--unpack", *rest], "unpacking the other packages",
                  step)
        _dpkg(root, ["--configure", "-a"], "configuring the packages", step)
        audit = run_in(root, ["dpkg", "--audit"], ENV, "dpkg --audit").strip()
        if audit:
            raise ConfigureError("dpkg --audit finds packages not fully set up:\n"
                                 + tail(audit))
    finally:
        shutil.rmtree(root / DEBS_DIR, ignore_errors=True)
        for path in added:
            path.unlink(missing_ok=True)
