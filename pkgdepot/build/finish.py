"""The last steps of a template: the template tree's overlay copied in, its
post-install scripts run inside the root, in name order, and what the build
leaves that differs from one build to the next removed (as mmdebstrap's
cleanup/reproducible does, and a little more)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from pkgdepot.build.chroot import ChrootError, run_in
from pkgdepot.errors import PkgdepotError

SCRIPTS_DIR = "tmp/pkgdepot-post-install"
#: Logs, caches, backups and seeds written while building, with dates, times
#: or random bytes in them: removed at the end of a full template (patterns
#: relative to the root). dpkg, apt, ldconfig and debconf make them anew.
BUILD_TRACES = (
    "var/log/dpkg.log", "var/log/alternatives.log", "var/log/apt/*.log",
    "var/log/apt/eipp.log.xz", "var/cache/ldconfig/aux-cache", "var/cache/apt/*.bin",
    "var/lib/dpkg/*-old", "var/cache/debconf/*-old", "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed", "var/lib/urandom/random-seed",
    # rpm's sqlite database: the shared-memory index of its (checkpointed,
    # empty) write-ahead log, random salts; sqlite makes it anew when opened
    "var/lib/rpm/*.sqlite-shm", "usr/lib/sysimage/rpm/*.sqlite-shm")
#: Present but emptied: systemd makes a new machine id when the template first
#: boots (machine-id(5): an image shared by many machines has an empty one).
EMPTIED = ("etc/machine-id",)


class ScriptError(PkgdepotError):
    """A post-install script of the template failed."""

    status = 500


def apply_overlay(root: Path, overlay: Mapping[str, Path]) -> None:
    """Copy the overlay's files (modes kept, links as links) into the root;
    a path that is a link inside the root is replaced, never followed."""
    for rel, src in sorted(overlay.items()):
        dest = root / rel
        parts = Path(rel).parts
        for i in range(1, len(parts)):
            if root.joinpath(*parts[:i]).is_symlink():
                raise ScriptError(f"overlay file {src}: /{'/'.join(parts[:i])} is a link in "
                                  "the template; the overlay does not write through links",
                                  hint="put the file under the link's target instead")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        if src.is_symlink():
            os.symlink(os.readlink(src), dest)
        else:
            shutil.copy2(src, dest)


def run_scripts(root: Path, scripts: Mapping[str, Path], env: Mapping[str, str]) -> list[str]:
    """Run each script inside the root (chroot, private namespaces), in
    order of name; stops at the first failure with its output."""
    staged = root / SCRIPTS_DIR
    staged.mkdir(parents=True, exist_ok=True)
    ran = []
    try:
        for name, src in sorted(scripts.items()):
            shutil.copyfile(src, staged / name)
            (staged / name).chmod(0o755)
            try:
                run_in(root, [f"/{SCRIPTS_DIR}/{name}"], dict(env), f"post-install script {src}")
            except ChrootError as e:
                raise ScriptError(e.message, hint="the lines above are the script's output; "
                                  "scripts run in the new root, in name order") from e
            ran.append(name)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return ran


def remove_build_traces(root: Path) -> list[str]:
    """Remove BUILD_TRACES and empty EMPTIED files under `root`; returns the
    paths touched (relative), sorted. Links are removed, never followed, and
    nothing is touched through a directory link that leads out of the root."""
    inside = root.resolve()
    touched = []
    for pattern in BUILD_TRACES:
        for path in sorted(root.glob(pattern)):
            if not path.parent.resolve().is_relative_to(inside):
                continue
            if path.is_file() or path.is_symlink():
                path.unlink()
                touched.append(str(path.relative_to(root)))
    for rel in EMPTIED:
        path = root / rel
        if not path.parent.resolve().is_relative_to(inside):
            continue
        if path.is_symlink() or path.exists():
            path.unlink()
            path.write_bytes(b"")
            path.chmod(0o444)
            touched.append(rel)
    return sorted(touched)
