"""Registering an rpm-family root with the target's own rpm, inside the new
root: `rpm --install` of every package over the files we unpacked, so the
database is written in the target's own format and location (never by the
host's rpm: the rpm database version trap of seed 002), and %pre/%post
scriptlets run."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from pkgdepot.build.chroot import (
    ChrootError,
    ConfigureError,
    excerpt,
    failed_packages,
    run_in,
    stage,
)

RPMS_DIR = "var/cache/pkgdepot-rpms"


def configure(root: Path, rpms: Mapping[str, Path]) -> None:
    """Register the unpacked packages `rpms` (name -> .rpm file) with the rpm
    inside `root`, scriptlets included."""
    if not any((root / d / "rpm").exists() for d in ("usr/bin", "bin")):
        raise ConfigureError(f"{root} has no rpm: the target cannot register its packages "
                             "itself (and the host's rpm would write a database the target "
                             "may not read)",
                             hint="add rpm to the package list, or build with --appliance")
    inside = stage(root, rpms, RPMS_DIR, ".rpm")
    try:
        try:
            out = run_in(root, ["rpm", "--install", "--replacepkgs", *inside],
                         what="the target's rpm --install")
        except ChrootError as e:
            out = e.output
            if not failed_packages(out):
                raise
        names = failed_packages(out)
        if names:
            raise ConfigureError(
                f"{', '.join(names)}: a scriptlet failed in the target's rpm:\n"
                + "\n".join(excerpt(out, n) for n in names),
                hint="the scriptlet's output is above; fix or replace the package, or build "
                     "with --appliance")
    finally:
        shutil.rmtree(root / RPMS_DIR, ignore_errors=True)
