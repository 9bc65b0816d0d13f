"""Real, signed apt and rpm-md repositories built on the fly for tests.

Packages are built with the distribution's own tools (``dpkg-deb``, ``rpmbuild``),
indexed with ``apt-ftparchive`` / ``createrepo_c`` and signed with a throw-away
:class:`~tests.support.keys.GpgKey`. Everything is written under the directory the
caller passes (plus a build cache, see :func:`set_build_cache_dir`).

Built packages are cached by the hash of their spec, so republishing a repository
or building the same package set in another test costs a file copy. Package files
are always *copied* out of the cache, so a test may damage a served file in place.

Layouts produced::

    apt:  ROOT/pool/COMPONENT/<h|libh>/NAME/NAME_VERSION_ARCH.deb
          ROOT/dists/SUITE/{Release,InRelease,Release.gpg}
          ROOT/dists/SUITE/COMPONENT/binary-ARCH/{Packages,Packages.gz,Packages.xz}
          ROOT/dists/SUITE/COMPONENT/binary-ARCH/by-hash/SHA256/<hex>   (by_hash=True)
    rpm:  ROOT/Packages/NAME-VERSION-RELEASE.ARCH.rpm
          ROOT/repodata/{repomd.xml,repomd.xml.asc,repomd.xml.key,<sum>-primary.xml.gz,...}
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import lzma
import os
import random
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from tests.support.keys import GpgKey

__all__ = [
    "AptPackage",
    "AptRepo",
    "DebSpec",
    "RpmPackage",
    "RpmRepo",
    "RpmSpec",
    "build_apt_repo",
    "build_rpm_repo",
    "publish_debs",
    "set_build_cache_dir",
    "sha256_file",
]

_TIMEOUT = 300
_WORKERS = max(2, (os.cpu_count() or 2) * 2)
# Bump to invalidate cached builds when the build recipe changes.
_RECIPE_VERSION = "1"


# ------------------------------------------------------------------------------------------
# helpers


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
         input: bytes | None = None) -> bytes:
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=env, input=input, capture_output=True,
        timeout=_TIMEOUT, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n"
            f"stdout:\n{proc.stdout.decode(errors='replace')}\n"
            f"stderr:\n{proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout


def _padding(seed: str, size: int) -> bytes:
    """Deterministic, incompressible filler (same spec -> same bytes -> same package)."""
    if size <= 0:
        return b""
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    return rng.randbytes(size)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}.{threading.get_ident()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _clean_relpath(p: str) -> str:
    rel = p.lstrip("/")
    parts = Path(rel).parts
    if not rel or any(part in ("..", ".") for part in parts):
        raise ValueError(f"bad path inside package: {p!r}")
    return rel


_cache_dir_lock = threading.Lock()
_default_cache_dir: Path | None = None
_build_locks: dict[str, threading.Lock] = {}


def set_build_cache_dir(path: Path | None) -> None:
    """Set the process-wide directory where built packages are cached.

    Without one, each repository root gets its own ``ROOT/.build-cache`` (which still
    makes republishing into the same root fast). The ``package_build_cache`` fixture
    sets a session-wide one.
    """
    global _default_cache_dir
    with _cache_dir_lock:
        _default_cache_dir = Path(path) if path is not None else None


def _cache_dir_for(root: Path, cache_dir: Path | None) -> Path:
    d = cache_dir or _default_cache_dir or (root / ".build-cache")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _key_lock(key: str) -> threading.Lock:
    with _cache_dir_lock:
        return _build_locks.setdefault(key, threading.Lock())


# ------------------------------------------------------------------------------------------
# apt


@dataclass
class DebSpec:
    """One binary .deb to build. ``files`` maps paths inside the package to content.

    With no ``files``, the package gets ``usr/share/NAME/version`` holding "NAME VERSION".
    ``size_padding`` adds ``usr/share/NAME/padding.bin`` of that many incompressible bytes.
    """

    name: str
    version: str
    arch: str = "all"
    depends: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    size_padding: int = 0
    component: str = "main"
    description: str = ""
    scripts: dict[str, str] = field(default_factory=dict)  # maintainer scripts: postinst...

    def cache_key(self) -> str:
        d = asdict(self)
        d["files"] = {k: hashlib.sha256(v).hexdigest() for k, v in sorted(self.files.items())}
        d["recipe"] = _RECIPE_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    @property
    def filename(self) -> str:
        # Debian drops the epoch from file names.
        return f"{self.name}_{self.version.split(':', 1)[-1]}_{self.arch}.deb"

    @property
    def pool_path(self) -> str:
        prefix = self.name[:4] if self.name.startswith("lib") and len(self.name) > 3 else (
            self.name[0]
        )
        return f"pool/{self.component}/{prefix}/{self.name}/{self.filename}"

    def payload(self) -> dict[str, bytes]:
        files = {_clean_relpath(k): v for k, v in self.files.items()}
        if not files:
            files[f"usr/share/{self.name}/version"] = f"{self.name} {self.version}\n".encode()
        if self.size_padding > 0:
            files[f"usr/share/{self.name}/padding.bin"] = _padding(
                f"deb:{self.name}:{self.version}:{self.arch}", self.size_padding
            )
        return files


class AptPackage(NamedTuple):
    name: str
    version: str
    arch: str
    path: str  # relative to the repository root, e.g. "pool/main/h/hello/hello_1.0_all.deb"
    sha256: str


@dataclass
class SourceSpec:
    """A native source package ("3.0 (native)", built by dpkg-source): in the
    pool as NAME_VERSION.dsc and NAME_VERSION.tar.xz, listed in Sources."""

    name: str
    version: str
    component: str = "main"

    @property
    def directory(self) -> str:
        return f"pool/{self.component}/{self.name[0]}/{self.name}"


def _build_source(spec: SourceSpec, root: Path) -> list[str]:
    """Build `spec` into the pool under `root`; the paths (relative to root) of
    its .dsc and .tar.xz."""
    dest = root / spec.directory
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="srcbuild", dir=root) as tmp:
        tree = Path(tmp) / f"{spec.name}-{spec.version}"
        (tree / "debian" / "source").mkdir(parents=True)
        (tree / "debian" / "control").write_text(
            f"Source: {spec.name}\nMaintainer: pkgdepot tests <tests@pkgdepot.invalid>\n"
            f"Section: misc\nPriority: optional\nStandards-Version: 4.6.2\n\n"
            f"Package: {spec.name}\nArchitecture: all\nDescription: pkgdepot test source\n"
            " Built by tests/support/repos.py.\n")
        (tree / "debian" / "changelog").write_text(
            f"{spec.name} ({spec.version}) stable; urgency=low\n\n  * Test.\n\n"
            " -- pkgdepot tests <tests@pkgdepot.invalid>  Tue, 14 Nov 2023 22:13:20 +0000\n")
        (tree / "debian" / "rules").write_text("#!/usr/bin/make -f\n%:\n\tdh $@\n")
        (tree / "debian" / "source" / "format").write_text("3.0 (native)\n")
        (tree / "README").write_text(f"{spec.name} {spec.version}\n")
        _run(["dpkg-source", "-b", tree.name], cwd=Path(tmp),
             env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
        out = []
        for suffix in (".dsc", ".tar.xz"):
            name = f"{spec.name}_{spec.version}{suffix}"
            _copy_atomic(Path(tmp) / name, dest / name)
            out.append(f"{spec.directory}/{name}")
    return out


def _build_deb(spec: DebSpec, cache: Path) -> Path:
    key = spec.cache_key()
    out = cache / "deb" / key[:2] / f"{key}.deb"
    with _key_lock(key):
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="debbuild", dir=cache) as tmp:
            tree = Path(tmp) / "tree"
            (tree / "DEBIAN").mkdir(parents=True)
            control = [
                f"Package: {spec.name}",
                f"Version: {spec.version}",
                f"Architecture: {spec.arch}",
                "Maintainer: pkgdepot tests <tests@pkgdepot.invalid>",
                "Section: misc",
                "Priority: optional",
            ]
            if spec.depends:
                control.append(f"Depends: {spec.depends}")
            desc = spec.description or f"pkgdepot test package {spec.name}"
            control.append(f"Description: {desc}")
            control.append(" Built by tests/support/repos.py.")
            (tree / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
            for script, text in spec.scripts.items():
                (tree / "DEBIAN" / script).write_text(text)
                (tree / "DEBIAN" / script).chmod(0o755)
            for rel, data in spec.payload().items():
                p = tree / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            big = spec.size_padding >= (1 << 20)
            deb = Path(tmp) / "out.deb"
            _run([
                "dpkg-deb", "--root-owner-group", "-Znone" if big else "-Zgzip",
                *([] if big else ["-z1"]), "--build", str(tree), str(deb),
            ], env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
            os.replace(deb, out)
    return out


@dataclass
class AptRepo:
    root: Path
    suite: str
    components: tuple[str, ...]
    archs: tuple[str, ...]
    key: GpgKey
    packages: list[AptPackage]
    codename: str | None = None
    source_files: list[str] = field(default_factory=list)  # .dsc and .tar.xz, from root
    udebs: list[AptPackage] = field(default_factory=list)

    @property
    def dists(self) -> Path:
        return self.root / "dists" / self.suite

    def sources_line(self, base_url: str, signed_by: Path | None = None) -> str:
        """``deb [signed-by=KEYRING] URL SUITE COMPONENTS`` (one-line sources.list format)."""
        keyring = signed_by or self.key.public_keyring
        return (
            f"deb [signed-by={keyring}] {base_url.rstrip('/')}/ {self.suite} "
            f"{' '.join(self.components)}"
        )

    def package(self, name: str) -> AptPackage:
        for p in self.packages:
            if p.name == name:
                return p
        raise KeyError(name)

    def file(self, pkg: AptPackage | str) -> Path:
        """Local path of a package (by record or name)."""
        p = self.package(pkg) if isinstance(pkg, str) else pkg
        return self.root / p.path

    def index_paths(self) -> list[str]:
        """Paths (relative to root) of the suite's signed and indexed metadata files."""
        out = [f"dists/{self.suite}/{n}" for n in ("InRelease", "Release", "Release.gpg")]
        for comp in self.components:
            for arch in self.archs:
                for ext in ("", ".gz", ".xz"):
                    out.append(f"dists/{self.suite}/{comp}/binary-{arch}/Packages{ext}")
        return out


def build_apt_repo(
    root: Path,
    key: GpgKey,
    packages: Iterable[DebSpec],
    suite: str = "stable",
    codename: str | None = None,
    components: Sequence[str] = ("main",),
    archs: Sequence[str] = ("amd64",),
    by_hash: bool = True,
    *,
    origin: str = "pkgdepot-test",
    label: str = "pkgdepot-test",
    date: datetime | None = None,
    valid_until: datetime | None = None,
    cache_dir: Path | None = None,
    sources: Iterable[SourceSpec] = (),
    udebs: Iterable[DebSpec] = (),
) -> AptRepo:
    """Build (or republish) a signed apt repository at ``root``.

    ``sources`` become COMPONENT/source/Sources{,.gz,.xz}; ``udebs`` (built
    like debs, named .udeb) COMPONENT/debian-installer/binary-ARCH/Packages*.

    Each ``DebSpec.component`` must be one of ``components``. Packages of arch "all"
    appear in every ``binary-ARCH`` index; others only in their own arch's. The indices
    list exactly ``packages``: files of earlier publications stay in the pool (like a
    real archive) but are no longer indexed. ``Codename`` is ``codename`` or the suite.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    specs = list(packages)
    components = tuple(components)
    archs = tuple(archs)
    for s in specs:
        if s.component not in components:
            raise ValueError(f"{s.name}: component {s.component!r} not in {components}")
        if s.arch != "all" and s.arch not in archs:
            raise ValueError(f"{s.name}: arch {s.arch!r} not in {archs}")
    seen: set[str] = set()
    for s in specs:
        if s.pool_path in seen:
            raise ValueError(f"duplicate package file {s.pool_path}")
        seen.add(s.pool_path)
    cache = _cache_dir_for(root, cache_dir)

    with ThreadPoolExecutor(_WORKERS) as ex:
        built = list(ex.map(lambda s: _build_deb(s, cache), specs))

    records: list[AptPackage] = []
    for spec, deb in zip(specs, built, strict=True):
        dest = root / spec.pool_path
        if not dest.is_file() or sha256_file(dest) != sha256_file(deb):
            _copy_atomic(deb, dest)
        records.append(AptPackage(spec.name, spec.version, spec.arch, spec.pool_path,
                                  sha256_file(dest)))

    source_files = [f for spec in sources for f in _build_source(spec, root)]
    udeb_records: list[AptPackage] = []
    for spec in udebs:
        path = spec.pool_path[: -len(".deb")] + ".udeb"
        _copy_atomic(_build_deb(spec, cache), root / path)
        udeb_records.append(AptPackage(spec.name, spec.version, spec.arch, path,
                                       sha256_file(root / path)))

    _index_and_sign(root, key, [s.pool_path for s in specs], suite, codename, components,
                    archs, by_hash, origin, label, date, valid_until, source_files,
                    [u.path for u in udeb_records])

    return AptRepo(
        root=root,
        suite=suite,
        components=components,
        archs=archs,
        key=key,
        packages=records,
        codename=codename,
        source_files=source_files,
        udebs=udeb_records,
    )


def _write_index(directory: Path, name: str, text: bytes) -> None:
    """`name`, `name`.gz and `name`.xz in `directory`."""
    _write_atomic(directory / f"{name}.gz", gzip.compress(text, 6, mtime=0))
    _write_atomic(directory / f"{name}.xz", lzma.compress(text))
    _write_atomic(directory / name, text)


@contextlib.contextmanager
def _staged(root: Path, paths: Sequence[str], components: tuple[str, ...]) -> Iterator[Path]:
    """A staging tree of hard links to exactly `paths` (relative to root):
    apt-ftparchive scans it and writes paths relative to its directory."""
    with tempfile.TemporaryDirectory(prefix=".stage", dir=root) as stage_s:
        top = Path(stage_s)
        for path in paths:
            link = top / path
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(root / path, link)
        for comp in components:
            (top / "pool" / comp).mkdir(parents=True, exist_ok=True)
        yield top


def _index_and_sign(root: Path, key: GpgKey, pool_paths: list[str], suite: str,
                    codename: str | None, components: tuple[str, ...], archs: tuple[str, ...],
                    by_hash: bool, origin: str, label: str, date: datetime | None,
                    valid_until: datetime | None, source_files: Sequence[str] = (),
                    udeb_paths: Sequence[str] = ()) -> None:
    """Index exactly `pool_paths` (relative to root), and the source packages
    and udebs given, and write the signed release files."""
    dists = root / "dists" / suite
    dists.mkdir(parents=True, exist_ok=True)
    before = _mtimes(
        [dists / n for n in ("Release", "InRelease", "Release.gpg")]
        + [
            dists / c / f"binary-{a}" / f"Packages{ext}"
            for c in components for a in archs for ext in ("", ".gz", ".xz")
        ]
    )
    # Index only the current package list: hard-link it into a staging tree and let
    # apt-ftparchive scan that (it writes Filename: relative to its working directory).
    with _staged(root, pool_paths, components) as stage:
        for comp in components:
            for arch in archs:
                text = _run(
                    ["apt-ftparchive", "--arch", arch, "packages", f"pool/{comp}"],
                    cwd=stage,
                )
                _write_index(dists / comp / f"binary-{arch}", "Packages", text)
    if source_files:
        with _staged(root, source_files, components) as stage:
            for comp in components:
                text = _run(["apt-ftparchive", "sources", f"pool/{comp}"], cwd=stage)
                _write_index(dists / comp / "source", "Sources", text)
    if udeb_paths:
        with _staged(root, udeb_paths, components) as stage:
            for comp in components:
                for arch in archs:
                    text = _run(["apt-ftparchive", "--arch", arch, "packages", f"pool/{comp}"],
                                cwd=stage)
                    _write_index(dists / comp / "debian-installer" / f"binary-{arch}",
                                 "Packages", text)

    when = date or datetime.now(UTC)
    opts = {
        "Origin": origin,
        "Label": label,
        "Suite": suite,
        "Codename": codename or suite,
        "Architectures": " ".join(archs),
        "Components": " ".join(components),
        "Description": f"pkgdepot test repository {suite}",
        "Date": _rfc822(when),
    }
    cmd = ["apt-ftparchive"]
    if valid_until is not None:
        # apt-ftparchive writes the field only with a ValidTime; then the value given wins.
        opts["Valid-Until"] = _rfc822(valid_until)
        cmd += ["-o", "APT::FTPArchive::Release::ValidTime=1"]
    for k, v in opts.items():
        cmd += ["-o", f"APT::FTPArchive::Release::{k}={v}"]
    cmd += ["-o", f"APT::FTPArchive::DoByHash={'true' if by_hash else 'false'}"]
    # Release files of the previous publication would be picked up as index files.
    for n in ("Release", "InRelease", "Release.gpg"):
        (dists / n).unlink(missing_ok=True)
    release_text = _run([*cmd, "release", f"dists/{suite}"], cwd=root)
    # apt-ftparchive release with "dists/SUITE" lists paths relative to that directory.
    with tempfile.TemporaryDirectory(prefix=".sign", dir=root) as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "Release").write_bytes(release_text)
        key.clearsign(tmp / "Release", tmp / "InRelease")
        key.detach_sign(tmp / "Release", tmp / "Release.gpg", armor=True)
        os.replace(tmp / "Release", dists / "Release")
        os.replace(tmp / "Release.gpg", dists / "Release.gpg")
        os.replace(tmp / "InRelease", dists / "InRelease")
    _bump_mtimes(before)


def publish_debs(root: Path, key: GpgKey, debs: Iterable[Path], suite: str = "stable",
                 archs: Sequence[str] = ("amd64",), specs: Iterable[DebSpec] = ()) -> AptRepo:
    """A signed apt repository (component main) of ready-made .deb files and
    packages built from `specs`."""
    root = Path(root).resolve()
    records: list[AptPackage] = []
    built = [_build_deb(s, _cache_dir_for(root, None)) for s in specs]
    for deb in [*debs, *built]:
        fields = dict(line.split("\t") for line in _run(
            ["dpkg-deb", "--show", "--showformat", "Package\t${Package}\nVersion\t${Version}\n"
             "Architecture\t${Architecture}\n", str(deb)]).decode().splitlines())
        spec = DebSpec(fields["Package"], fields["Version"], fields["Architecture"])
        _copy_atomic(deb, root / spec.pool_path)
        records.append(AptPackage(spec.name, spec.version, spec.arch, spec.pool_path,
                                  sha256_file(root / spec.pool_path)))
    _index_and_sign(root, key, [r.path for r in records], suite, None, ("main",), tuple(archs),
                    True, "pkgdepot-test", "pkgdepot-test", None, None)
    return AptRepo(root=root, suite=suite, components=("main",), archs=tuple(archs), key=key,
                   packages=records)


def _mtimes(paths: Iterable[Path]) -> dict[Path, int]:
    out = {}
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            out[p] = int(p.stat().st_mtime)
    return out


def _bump_mtimes(before: dict[Path, int]) -> None:
    """Give every republished file a Last-Modified later than its previous version's.

    HTTP dates have one-second resolution: a client revalidating with If-Modified-Since
    would get 304 for a file republished within the same second. Pushing the mtime
    (at most a few seconds into the future) keeps conditional requests truthful.
    """
    for p, old in before.items():
        try:
            new = p.stat().st_mtime
        except FileNotFoundError:
            continue
        if int(new) <= old:
            os.utime(p, (old + 1, old + 1))


def _rfc822(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")


# ------------------------------------------------------------------------------------------
# rpm


@dataclass
class RpmSpec:
    """One binary rpm to build. ``requires`` are rpm Requires: strings ("foo >= 1.0").

    With no ``files``, the package gets ``/usr/share/NAME/version``. ``size_padding`` adds
    ``/usr/share/NAME/padding.bin``.
    """

    name: str
    version: str
    release: str = "1"
    arch: str = "noarch"
    requires: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    size_padding: int = 0
    summary: str = ""
    executable: list[str] = field(default_factory=list)  # paths of files with mode 0755
    scripts: dict[str, str] = field(default_factory=dict)  # scriptlets: "post" -> shell

    def cache_key(self) -> str:
        d = asdict(self)
        d["files"] = {k: hashlib.sha256(v).hexdigest() for k, v in sorted(self.files.items())}
        d["recipe"] = _RECIPE_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"

    def payload(self) -> dict[str, bytes]:
        files = {_clean_relpath(k): v for k, v in self.files.items()}
        if not files:
            files[f"usr/share/{self.name}/version"] = (
                f"{self.name} {self.version}-{self.release}\n".encode()
            )
        if self.size_padding > 0:
            files[f"usr/share/{self.name}/padding.bin"] = _padding(
                f"rpm:{self.name}:{self.version}:{self.release}:{self.arch}", self.size_padding
            )
        return files


class RpmPackage(NamedTuple):
    name: str
    version: str
    release: str
    arch: str
    path: str  # relative to the repository root, e.g. "Packages/foo-1.0-1.noarch.rpm"
    sha256: str


def _rpm_macros(topdir: Path) -> list[str]:
    """rpmbuild --define arguments that keep everything under ``topdir``."""
    defs = {
        "_topdir": str(topdir),
        "_tmppath": str(topdir / "tmp"),
        "_builddir": str(topdir / "BUILD"),
        "_buildrootdir": str(topdir / "BUILDROOT"),
        "_rpmdir": str(topdir / "RPMS"),
        "_srcrpmdir": str(topdir / "SRPMS"),
        "_sourcedir": str(topdir / "SOURCES"),
        "_specdir": str(topdir / "SPECS"),
        "_dbpath": str(topdir / "rpmdb"),
        "debug_package": "%{nil}",
        "__os_install_post": "%{nil}",
        "_build_id_links": "none",
        "_binary_payload": "w1.gzdio",
        "_source_payload": "w1.gzdio",
        "_buildhost": "pkgdepot.invalid",
        "_rpmfilename": "%%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
    }
    out: list[str] = []
    for k, v in defs.items():
        out += ["--define", f"{k} {v}"]
    return out


def _spec_escape(s: str) -> str:
    return s.replace("%", "%%")


def _build_rpm_batch(specs: list[RpmSpec], cache: Path) -> None:
    """Build several rpms with one rpmbuild run (each as a subpackage of a dummy spec)."""
    with tempfile.TemporaryDirectory(prefix="rpmbuild", dir=cache) as tmp:
        top = Path(tmp)
        for d in ("SPECS", "SOURCES", "BUILD", "BUILDROOT", "RPMS", "SRPMS", "tmp", "home"):
            (top / d).mkdir()
        lines = [
            "Name: pkgdepot-test-batch",
            "Version: 0",
            "Release: 0",
            "Summary: pkgdepot test batch",
            "License: MIT",
            "AutoReqProv: no",
            "%description",
            "Batch of test packages.",
        ]
        install = ["%install", "rm -rf %{buildroot}", "mkdir -p %{buildroot}"]
        files_sections: list[str] = []
        for i, s in enumerate(specs):
            lines += [
                f"%package -n {s.name}",
                f"Version: {s.version}",
                f"Release: {s.release}",
                f"BuildArch: {s.arch}" if s.arch == "noarch" else "",
                f"Summary: {_spec_escape(s.summary or 'pkgdepot test package ' + s.name)}",
                "License: MIT",
                "AutoReqProv: no",
                *(f"Requires: {r}" for r in s.requires),
                f"%description -n {s.name}",
                f"Test package {s.name}.",
            ]
            src = top / "SOURCES" / f"p{i}"
            src.mkdir()
            paths: list[str] = []
            for rel, data in s.payload().items():
                p = src / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
                p.chmod(0o755 if rel in map(_clean_relpath, s.executable) else 0o644)
                paths.append("/" + rel)
            install.append(f"cp -a {src}/. %{{buildroot}}/")
            for scriptlet, body in s.scripts.items():
                files_sections += [f"%{scriptlet} -n {s.name}", _spec_escape(body)]
            files_sections.append(f"%files -n {s.name}")
            files_sections += [f'"{_spec_escape(p)}"' for p in sorted(paths)]
        spec_file = top / "SPECS" / "batch.spec"
        spec_file.write_text("\n".join([*lines, *install, *files_sections]) + "\n")
        archs = {s.arch for s in specs}
        target = [] if archs <= {"noarch"} else ["--target", next(a for a in archs
                                                                    if a != "noarch")]
        env = {
            "HOME": str(top / "home"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "TMPDIR": str(top / "tmp"),
            "SOURCE_DATE_EPOCH": "1700000000",
        }
        _run(["rpmbuild", "-bb", "--quiet", *target, *_rpm_macros(top), str(spec_file)],
             cwd=top, env=env)
        for s in specs:
            built = top / "RPMS" / s.filename
            key = s.cache_key()
            out = cache / "rpm" / key[:2] / f"{key}.rpm"
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(built, out)


def _build_rpms(specs: list[RpmSpec], cache: Path) -> list[Path]:
    def out_path(s: RpmSpec) -> Path:
        key = s.cache_key()
        return cache / "rpm" / key[:2] / f"{key}.rpm"

    todo: dict[str, RpmSpec] = {}
    for s in specs:
        if not out_path(s).is_file():
            todo.setdefault(s.cache_key(), s)
    # Batches with unique names (subpackage names must differ) and one non-noarch arch.
    batches: list[list[RpmSpec]] = []
    per_batch = max(1, min(50, -(-len(todo) // _WORKERS)))
    for s in todo.values():
        for b in batches:
            if (
                len(b) < per_batch
                and all(o.name != s.name for o in b)
                and len(({o.arch for o in b} | {s.arch}) - {"noarch"}) <= 1
            ):
                b.append(s)
                break
        else:
            batches.append([s])
    if batches:
        with ThreadPoolExecutor(_WORKERS) as ex:
            list(ex.map(lambda b: _build_rpm_batch(b, cache), batches))
    return [out_path(s) for s in specs]


@dataclass
class RpmRepo:
    root: Path
    key: GpgKey
    packages: list[RpmPackage]

    @property
    def repomd(self) -> Path:
        return self.root / "repodata" / "repomd.xml"

    @property
    def gpgkey_path(self) -> Path:
        """The armored public key published next to repomd.xml."""
        return self.root / "repodata" / "repomd.xml.key"

    def repo_file(self, name: str, baseurl: str, proxy: str | None = None,
                  gpgcheck: bool = False) -> str:
        """A dnf/yum ``.repo`` section: metadata signature checked, packages unsigned."""
        lines = [
            f"[{name}]",
            f"name=pkgdepot test repository {name}",
            f"baseurl={baseurl.rstrip('/')}/",
            "enabled=1",
            f"gpgcheck={1 if gpgcheck else 0}",
            "repo_gpgcheck=1",
            f"gpgkey=file://{self.key.public_armored}",
            "metadata_expire=0",
            "skip_if_unavailable=False",
        ]
        if proxy:
            lines.append(f"proxy={proxy}")
        return "\n".join(lines) + "\n"

    def package(self, name: str) -> RpmPackage:
        for p in self.packages:
            if p.name == name:
                return p
        raise KeyError(name)

    def file(self, pkg: RpmPackage | str) -> Path:
        p = self.package(pkg) if isinstance(pkg, str) else pkg
        return self.root / p.path

    def metadata_paths(self) -> list[str]:
        """repodata/ files (relative to root) named by the current repomd.xml, and its own."""
        import xml.etree.ElementTree as ET

        ns = {"r": "http://linux.duke.edu/metadata/repo"}
        tree = ET.parse(self.repomd)
        out = ["repodata/repomd.xml", "repodata/repomd.xml.asc", "repodata/repomd.xml.key"]
        for loc in tree.getroot().findall("r:data/r:location", ns):
            out.append(loc.attrib["href"])
        return out


def build_rpm_repo(
    root: Path,
    key: GpgKey,
    packages: Iterable[RpmSpec],
    *,
    database: bool = False,
    cache_dir: Path | None = None,
) -> RpmRepo:
    """Build (or republish) a signed rpm-md repository at ``root``.

    Packages are copied to ``root/Packages``; ``createrepo_c`` indexes exactly
    ``packages`` (``--pkglist``; older files may stay in Packages/ unindexed) and is run
    with ``--update`` when repodata exists. repomd.xml gets a detached armored signature
    (repomd.xml.asc) and the armored public key (repomd.xml.key). ``database`` adds the
    sqlite databases (off by default: dnf and zypper do not need them, and it is slower).
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    specs = list(packages)
    names = [s.filename for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate rpm file names in package list")
    cache = _cache_dir_for(root, cache_dir)
    built = _build_rpms(specs, cache)
    records: list[RpmPackage] = []
    for spec, rpmfile in zip(specs, built, strict=True):
        rel = f"Packages/{spec.filename}"
        dest = root / rel
        if not dest.is_file() or sha256_file(dest) != sha256_file(rpmfile):
            _copy_atomic(rpmfile, dest)
        records.append(RpmPackage(spec.name, spec.version, spec.release, spec.arch, rel,
                                  sha256_file(dest)))
    (root / "Packages").mkdir(exist_ok=True)
    repodata = root / "repodata"
    before = _mtimes(repodata / n for n in ("repomd.xml", "repomd.xml.asc", "repomd.xml.key"))
    with tempfile.TemporaryDirectory(prefix=".crepo", dir=root) as tmp_s:
        tmp = Path(tmp_s)
        pkglist = tmp / "pkglist"
        pkglist.write_text("".join(f"{r.path}\n" for r in records))
        cmd = [
            "createrepo_c", "--quiet", "--workers", str(_WORKERS),
            "--pkglist", str(pkglist),
            "--excludes", ".*",
            "--revision", str(int(datetime.now(UTC).timestamp())),
        ]
        if not database:
            cmd.append("--no-database")
        if (root / "repodata" / "repomd.xml").is_file():
            cmd.append("--update")
        cmd.append(str(root))
        _run(cmd, cwd=root, env={**os.environ, "TMPDIR": str(tmp), "LC_ALL": "C"})
        key.detach_sign(repodata / "repomd.xml", tmp / "repomd.xml.asc", armor=True)
        shutil.copyfile(key.public_armored, tmp / "repomd.xml.key")
        os.replace(tmp / "repomd.xml.key", repodata / "repomd.xml.key")
        os.replace(tmp / "repomd.xml.asc", repodata / "repomd.xml.asc")
    _bump_mtimes(before)
    return RpmRepo(root=root, key=key, packages=records)
