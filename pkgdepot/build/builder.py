"""pkgdepot build: template -> resolution (lock) -> download through the
depot -> unpack. Appliance mode (seed 004) stops there and writes a
manifest; a full template is then registered and configured by the
target's own dpkg or rpm inside the new root."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkgdepot.build import configure_deb, configure_rpm
from pkgdepot.build.clients import disable_distribution_repos, write_clients
from pkgdepot.build.fetch import RepoSpec, apt_indexes, download, required_debs, rpm_indexes
from pkgdepot.build.finish import apply_overlay, remove_build_traces, run_scripts
from pkgdepot.build.pack import clamp_times, pack, source_date_epoch
from pkgdepot.build.resolve import Index, Locked, read_lock, resolve, write_lock
from pkgdepot.build.tree import Template, TemplateError
from pkgdepot.build.unpack import Unpacked, deb_control, unpack
from pkgdepot.progress import Progress


@dataclass
class BuildConfig:
    family: str
    depot: str
    repositories: list[RepoSpec]
    replacements: dict[str, str] = field(default_factory=dict)
    include_required: bool = True
    merged_usr: bool = True
    client_depot: str | None = None       # the depot as clients in the template see it
    signed_by: dict[str, str] = field(default_factory=dict)   # apt repository -> keyring
    gpgkeys: dict[str, str] = field(default_factory=dict)     # rpm repository -> gpgkey URL

    def client_repos(self) -> list[RepoSpec]:
        depot = self.client_depot or self.depot
        return [dataclasses.replace(r, depot=depot) for r in self.repositories]


def build_config(template: Template, depot: str | None, snapshot: str | None) -> BuildConfig:
    f = template.files.get("build.toml")
    if f is None:
        raise TemplateError(f"no build.toml anywhere in the tree above {template.path}",
                            hint="it names the family (deb or rpm), the depot and the "
                                 "repositories")
    try:
        data: dict[str, Any] = tomllib.loads(f.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TemplateError(f"{f}: {e}") from e
    family = data.get("family")
    if family not in ("deb", "rpm"):
        raise TemplateError(f'{f}: family: expected "deb" or "rpm", got {family!r}')
    depot_url = depot or data.get("depot")
    if not isinstance(depot_url, str) or not depot_url.startswith(("http://", "https://")):
        raise TemplateError(f"{f}: depot: the depot's URL (or --depot URL) is needed")
    repos = []
    entries = data.get("repositories", [])
    if not isinstance(entries, list):
        raise TemplateError(f"{f}: repositories: expected [[repositories]] tables")
    for i, r in enumerate(entries):
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            raise TemplateError(f"{f}: repositories[{i}]: needs a name")
        components, suite = r.get("components", ["main"]), r.get("suite", "")
        pinned = snapshot or r.get("snapshot")
        if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
            raise TemplateError(f'{f}: repositories[{i}]: components: expected ["main", ...]')
        if not isinstance(suite, str) or not (pinned is None or isinstance(pinned, str)):
            raise TemplateError(f"{f}: repositories[{i}]: suite and snapshot are strings")
        repos.append(RepoSpec(depot_url, r["name"], suite, tuple(components), pinned))
        if family == "deb" and not repos[-1].suite:
            raise TemplateError(f"{f}: repositories[{i}]: a deb repository needs a suite")
    if not repos:
        raise TemplateError(f"{f}: repositories: at least one is needed")
    repl = data.get("replacements", {})
    if not isinstance(repl, dict) or not all(isinstance(v, str) for v in repl.values()):
        raise TemplateError(f"{f}: replacements: expected NAME = \"STAND-IN\" lines")
    client = data.get("client_depot")
    if client is not None and (not isinstance(client, str)
                               or not client.startswith(("http://", "https://"))):
        raise TemplateError(f"{f}: client_depot: expected the depot's URL as the template's "
                            "clients reach it")
    keys = {k: {r["name"]: str(r[k]) for r in data.get("repositories", []) if k in r}
            for k in ("signed_by", "gpgkey")}
    return BuildConfig(family, depot_url, repos, dict(repl),
                       bool(data.get("include_required", family == "deb")),
                       bool(data.get("merged_usr", True)), client, keys["signed_by"],
                       keys["gpgkey"])


def lock(template: Template, set_name: str, cfg: BuildConfig, workdir: Path) -> list[Locked]:
    """Resolve the template's set against the repositories (through the depot)."""
    indexes: list[Index] = []
    for repo in cfg.repositories:
        if cfg.family == "deb":
            indexes += apt_indexes(repo, template.arch, workdir)
        else:
            indexes += rpm_indexes(repo, workdir)
    wanted = {w.name: w.pin for w in template.packages(set_name).values()}
    required = required_debs(indexes) if cfg.include_required and cfg.family == "deb" else []
    return resolve(cfg.family, template.arch, indexes, wanted, required, cfg.replacements,
                   excluded=template.removed.get(set_name, {}).keys())


def fetch(packages: list[Locked], cache: Path) -> dict[Locked, Path]:
    """Download every package through the depot (checked against the lock)."""
    with Progress(f"downloading {len(packages)} packages", sum(p.size for p in packages)) as bar:
        return download(packages, cache, bar.advance)


def unpack_all(files: dict[Locked, Path], family: str, root: Path,
               merged: tuple[str, ...] = (), what: str = "unpacking",
               skip: tuple[str, ...] = ()) -> dict[Locked, Unpacked]:
    """Unpack the packages into `root` with libarchive (nothing runs)."""
    out = {}
    with Progress(what, len(files), unit="packages") as bar:
        for p in sorted(files):
            out[p] = unpack(files[p], root, family, merged, skip)
            bar.advance(1)
    return out


def appliance(packages: list[Locked], family: str, out: Path, cache: Path) -> Path:
    """The files of the packages, unpacked without running anything, and a
    manifest (packages, files, config files)."""
    manifest: dict[str, Any] = {"packages": []}
    for p, u in sorted(unpack_all(fetch(packages, cache), family, out).items()):
        manifest["packages"].append({
            "name": p.name, "version": p.version, "arch": p.arch, "sha256": p.sha256,
            "files": u.files, "conffiles": u.conffiles})
    path = out / ".pkgdepot-manifest.json"
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def debian_root(packages: list[Locked], root: Path, cache: Path,
                merged: tuple[str, ...]) -> None:
    """Unpack the essential set ourselves (dpkg and what maintainer scripts
    use must run in the root; documentation, manual pages, translations and
    time zones are left to dpkg), then let the target's dpkg install every
    package from its .deb file: nothing else is unpacked twice."""
    configure_deb.prepare(root, merged)
    files = fetch(packages, cache)
    debs = {p.name: f for p, f in files.items()}
    controls = {name: deb_control(f) for name, f in debs.items()}
    essential = configure_deb.essential_set(controls)
    unpack_all({p: f for p, f in files.items() if p.name in essential}, "deb", root, merged,
               "unpacking the essential set for dpkg", configure_deb.NOT_NEEDED_TO_BOOT)
    with Progress("installing with the target's dpkg (unpack, set up)", 2 * len(debs),
                  unit="steps") as bar:
        configure_deb.configure(root, debs, controls, bar.advance)


def full_template(packages: list[Locked], template: Template, cfg: BuildConfig, root: Path,
                  cache: Path) -> None:
    """Unpack, then register and configure with the target's own tools."""
    if root.exists() and any(root.iterdir()):
        raise TemplateError(f"{root} exists and is not empty",
                            hint="a template is built into a new directory; give another --out")
    root.mkdir(parents=True, exist_ok=True)
    if cfg.family == "deb":
        merged = configure_deb.merged_usr_dirs(template.arch) if cfg.merged_usr else ()
        debian_root(packages, root, cache, merged)
    else:
        files = fetch(packages, cache)
        unpack_all(files, "rpm", root)
        with Progress("registering with the target's rpm", 1, unit="steps") as bar:
            configure_rpm.configure(root, {p.name: f for p, f in files.items()})
            bar.advance(1)
    disable_distribution_repos(root, cfg.family)
    write_clients(root, cfg.family, cfg.client_repos(), cfg.signed_by, cfg.gpgkeys)
    apply_overlay(root, template.overlay)
    if template.scripts:
        run_scripts(root, template.scripts, {"PKGDEPOT_DEPOT": cfg.client_depot or cfg.depot})
    remove_build_traces(root)


def run(template: Template, set_name: str, *, depot: str | None, snapshot: str | None,
        lock_in: Path | None, lock_out: Path | None, out: Path, cache: Path,
        appliance_mode: bool, fmt: str = "dir",
        resolve_only: bool = False) -> tuple[list[Locked], Path]:
    """Resolve (or read `lock_in`), write `lock_out` if given, then build
    into `out` unless `resolve_only`."""
    if resolve_only and lock_out is None:
        raise TemplateError("resolving only writes a lock file: give --write-lock FILE")
    epoch = source_date_epoch()   # checked before anything is done
    cfg = build_config(template, depot, snapshot)
    if lock_in is not None:
        packages, _meta = read_lock(lock_in)
    else:
        with tempfile.TemporaryDirectory(prefix="pkgdepot-build-") as tmp:
            packages = lock(template, set_name, cfg, Path(tmp))
    if lock_out is not None:
        write_lock(lock_out, packages, {"template": str(template.path), "set": set_name,
                                        "family": cfg.family})
    if resolve_only and lock_out is not None:
        return packages, lock_out

    def make(root: Path) -> None:
        # the modes of what the build itself creates do not depend on the caller's umask
        umask = os.umask(0o022)
        try:
            if appliance_mode:
                appliance(packages, cfg.family, root, cache)
                apply_overlay(root, template.overlay)
            else:
                full_template(packages, template, cfg, root, cache)
        finally:
            os.umask(umask)

    if fmt == "dir":
        make(out)
        return packages, out
    with tempfile.TemporaryDirectory(prefix="pkgdepot-root-", dir=out.parent) as tmp:
        root = Path(tmp) / "root"
        make(root)
        if epoch is not None:
            clamp_times(root, epoch)
        return packages, pack(root, out, fmt, epoch)
