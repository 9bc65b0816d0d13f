"""Running the target's own tools inside a new root, in a private mount and
PID namespace (unshare): /proc and a minimal /dev exist only in there, so
nothing is mounted on the host and every process ends with the command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pkgdepot.errors import PkgdepotError

TIMEOUT = 3600
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# $1 is the root, the rest is the command to run in it. The shell stays PID 1
# of the namespace, outside the root (no `exec chroot`): then /proc/1/root is
# not the root, and `ischroot` in maintainer scripts says "a chroot" (libc6's
# postinst otherwise runs `telinit u; sleep 1`).
SETUP = r"""
set -e
R="$1"; shift
mkdir -p "$R/proc" "$R/dev" "$R/tmp"
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=755,size=16m pkgdepot-dev "$R/dev"
for d in null zero full random urandom tty; do
    : > "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"
done
mkdir "$R/dev/pts" "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
chroot "$R" "$@"
exit $?
"""


class ChrootError(PkgdepotError):
    """A command of the target failed inside the new root."""

    status = 500
    output = ""  # everything the command printed


class ConfigureError(ChrootError):
    """A package could not be set up by the target's own tools."""


def stage(root: Path, files: Mapping[str, Path], directory: str, suffix: str) -> list[str]:
    """Hard-link (or copy) package files into the root; their paths inside."""
    staged = root / directory
    staged.mkdir(parents=True, exist_ok=True)
    inside = []
    for name, src in sorted(files.items()):
        dest = staged / f"{name}{suffix}"
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)
        inside.append(f"/{directory}/{name}{suffix}")
    return inside


def run_in(root: Path, cmd: Sequence[str], env: dict[str, str] | None = None,
           what: str = "", on_line: Callable[[str], None] | None = None) -> str:
    """Run `cmd` chrooted in `root`; returns its output (stdout and stderr),
    each line also given to `on_line` as it comes. Raises ChrootError with
    the output's tail when it fails."""
    full = {"PATH": PATH, "LC_ALL": "C", "HOME": "/root", "TERM": "dumb", **(env or {})}
    if os.environ.get("SOURCE_DATE_EPOCH"):
        # the dates tools write into the root (shadow's last password change,
        # documentation, caches) are this one, as in mmdebstrap
        full["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
         "sh", "-c", SETUP, "pkgdepot-chroot", str(root), *cmd],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full)
    timer = threading.Timer(TIMEOUT, proc.kill)
    timer.start()
    lines = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if on_line is not None:
                on_line(line)
        proc.wait()
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()
    out = "".join(lines)
    if proc.returncode != 0:
        err = ChrootError(f"{what or cmd[0]} failed in {root} (exit {proc.returncode}):\n"
                          + tail(out),
                          hint="the output above is the target's own; fix the package or "
                               "the template, or use --appliance to skip configuration")
        err.output = out
        raise err
    return out


def tail(text: str, lines: int = 40) -> str:
    return "\n".join("  | " + ln for ln in text.rstrip().splitlines()[-lines:])


def excerpt(output: str, name: str) -> str:
    """The lines a package manager printed about package `name`, from where
    it started on it to its error."""
    lines = output.splitlines()
    end = max((i for i, ln in enumerate(lines) if name in ln and "error" in ln.lower()),
              default=len(lines) - 1)
    start = end
    while start > 0 and not re.search(rf"(Setting up|Unpacking|Preparing to unpack|"
                                      rf"Installing|Running scriptlet).*\b{re.escape(name)}\b",
                                      lines[start]):
        start -= 1
    return tail("\n".join(lines[start:end + 1]), 60)


def failed_packages(output: str) -> list[str]:
    """Names dpkg or rpm give when a package's script fails."""
    names = re.findall(r"error processing (?:package|archive) (\S+)", output)
    names += re.findall(r"%\w+\((\S+?)\) scriptlet failed", output)
    return list(dict.fromkeys(os.path.basename(n) for n in names))
