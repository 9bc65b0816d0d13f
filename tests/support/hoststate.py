"""Fingerprints of the host's own package-manager state, to prove tests leave it alone.

:func:`snapshot` records size and mtime of the host's dpkg status and rpm database,
and the listing and mtime of the directories apt, dpkg, rpm, dnf and zypper write to;
:func:`diff` names what changed between two snapshots.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["HostState", "diff", "host_rpm_dbpath", "snapshot"]

# (size, mtime_ns, sorted directory listing or None); None when the path is missing.
HostState = dict[str, tuple[int, int, tuple[str, ...] | None] | None]

_FILES = [
    "/var/lib/dpkg/status",
    "/var/lib/dpkg/available",
    "/var/lib/apt/extended_states",
    "/etc/apt/sources.list",
    "/etc/apt/trusted.gpg",
    "/var/log/apt/history.log",
    "/var/log/dpkg.log",
    "/var/log/zypper.log",
    "/var/log/dnf.log",
    "/run/zypp.pid",
]
_DIRS = [
    "/var/lib/dpkg",
    "/var/lib/dpkg/info",
    "/var/lib/dpkg/updates",
    "/var/lib/apt/lists",
    "/var/cache/apt/archives",
    "/etc/apt/sources.list.d",
    "/etc/apt/trusted.gpg.d",
    "/etc/apt/apt.conf.d",
    "/var/lib/rpm",
    "/usr/lib/sysimage/rpm",
    "/etc/zypp/repos.d",
    "/var/cache/zypp",
    "/var/lib/zypp",
    "/var/log/zypp",
    "/etc/yum.repos.d",
    "/etc/dnf",
    "/var/cache/dnf",
    "/var/lib/dnf",
    "/root/.gnupg",
]


def host_rpm_dbpath() -> Path:
    """The host rpm database directory (Debian's rpm defaults to ~/.rpmdb)."""
    try:
        out = subprocess.run(["rpm", "--eval", "%{_dbpath}"], capture_output=True, text=True,
                             timeout=30, check=False).stdout.strip()
    except OSError:
        out = ""
    return Path(out or "/var/lib/rpm")


def _entry(path: Path, listing: bool) -> tuple[int, int, tuple[str, ...] | None] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    names: tuple[str, ...] | None = None
    if listing and path.is_dir():
        try:
            names = tuple(sorted(os.listdir(path)))
        except OSError:
            names = None
    return (st.st_size if not path.is_dir() else 0, st.st_mtime_ns, names)


def snapshot() -> HostState:
    state: HostState = {}
    for name in _FILES:
        state[name] = _entry(Path(name), listing=False)
    for name in _DIRS:
        state[name] = _entry(Path(name), listing=True)
    db = host_rpm_dbpath()
    state[str(db)] = _entry(db, listing=True)
    if db.is_dir():
        for f in db.iterdir():
            if f.is_file():
                state[str(f)] = _entry(f, listing=False)
    return state


def diff(before: HostState, after: HostState) -> list[str]:
    """Human-readable list of paths whose fingerprint changed."""
    out = []
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            out.append(f"{k}: {before.get(k)!r} -> {after.get(k)!r}")
    return out
