"""Real Debian packages without a network: the host's installed packages,
repacked as .deb files (what dpkg-repack does, from `dpkg-query` and the
package's control files), with the closure of their Depends/Pre-Depends.

dpkg-repack itself turns a listed directory that is a link on a merged-/usr
host (libc6's `/lib64`) into a link in the package and then fails to copy
the files below it; here every listed path that has listed paths below it,
and each merged-/usr link (`/bin -> usr/bin`), is a directory, as in the
original package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_SKIP_FIELDS = {"Status", "Conffiles", "Config-Version"}
_CONTROL_FILES = {"preinst", "postinst", "prerm", "postrm", "conffiles", "triggers",
                  "shlibs", "symbols", "templates", "config", "md5sums"}


def _query(fmt: str) -> str:
    return subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def installed() -> dict[str, dict[str, str]]:
    """Installed packages (native and arch all): name -> a few fields."""
    out: dict[str, dict[str, str]] = {}
    fmt = ("${db:Status-Abbrev}\t${Package}\t${Essential}\t${Priority}\t${Provides}\t"
           "${Depends}\t${Pre-Depends}\n")
    for line in _query(fmt).splitlines():
        st, name, ess, prio, prov, dep, pre = (line.split("\t") + [""] * 7)[:7]
        if st.startswith("ii"):
            out[name] = {"Essential": ess, "Priority": prio, "Provides": prov,
                         "Depends": ", ".join(x for x in (pre, dep) if x)}
    return out


def closure(names: Iterable[str], pkgs: dict[str, dict[str, str]]) -> list[str]:
    """`names` and everything they depend on, choosing installed alternatives."""
    provides: dict[str, str] = {}
    for name, f in pkgs.items():
        for p in f["Provides"].split(","):
            provides.setdefault(re.split(r"[\s(]", p.strip(), maxsplit=1)[0], name)
    todo = [n for n in names if n in pkgs]
    seen = set(todo)
    while todo:
        for group in filter(None, (g.strip() for g in pkgs[todo.pop()]["Depends"].split(","))):
            for alt in group.split("|"):
                dep = re.split(r"[\s(:]", alt.strip(), maxsplit=1)[0]
                dep = dep if dep in pkgs else provides.get(dep, "")
                if dep:
                    if dep not in seen:
                        seen.add(dep)
                        todo.append(dep)
                    break
    return sorted(seen)


def _control(name: str) -> str:
    text = subprocess.run(["dpkg-query", "-s", name], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    out, keep = [], True
    for line in text.splitlines():
        if line and not line[0].isspace():
            keep = line.split(":", 1)[0] not in _SKIP_FIELDS
        if keep:
            out.append(line)
    return "\n".join(out) + "\n"


def _copy(src: str, dest: Path) -> None:
    st = os.lstat(src)
    if os.path.islink(src):
        os.symlink(os.readlink(src), dest)
    else:
        shutil.copyfile(src, dest)
    os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
    if not os.path.islink(src):
        os.chmod(dest, st.st_mode & 0o7777)


def _merged(path: str) -> bool:
    """/bin -> usr/bin on a merged-/usr host: packages ship a directory there."""
    return path.count("/") == 1 and os.readlink(path) == "usr" + path


def repack(name: str, dest: Path) -> Path:
    """One installed package as DEST/NAME.deb (fast gzip)."""
    listed = [p for p in subprocess.run(["dpkg-query", "-L", name], capture_output=True,
                                        text=True, check=True, timeout=60).stdout.splitlines()
              if p.startswith("/") and p != "/."]
    parents = {str(a) for p in listed for a in Path(p).parents}
    with tempfile.TemporaryDirectory(prefix="repack", dir=dest) as tmp:
        tree = Path(tmp) / "tree"
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN/control").write_text(_control(name))
        paths = subprocess.run(["dpkg-query", "--control-path", name], capture_output=True,
                               text=True, check=True, timeout=60).stdout.split()
        for f in paths:
            kind = f.rsplit(".", 1)[-1]
            if kind in _CONTROL_FILES:
                shutil.copy2(f, tree / "DEBIAN" / kind)
        for p in listed:
            target = tree / p.lstrip("/")
            if os.path.isdir(p) and (p in parents or not os.path.islink(p) or _merged(p)):
                target.mkdir(parents=True, exist_ok=True)
                st = os.stat(p)
                os.chmod(target, st.st_mode & 0o7777)
            elif os.path.lexists(p):
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy(p, target)
        out = dest / f"{name}.deb"
        subprocess.run(["dpkg-deb", "-Zgzip", "-z1", "--build", str(tree), str(out)],
                       capture_output=True, check=True, timeout=300)
    return out


def repack_all(names: Iterable[str], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda n: repack(n, dest), names))
