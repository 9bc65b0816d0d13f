"""pkgdepot build: template -> resolution (lock) -> download through the
depot -> unpack. Appliance mode (seed 004) stops there and writes a
manifest; configuring a full template with the target's own dpkg or rpm is
the next step of this module."""

from __future__ import annotations

import json
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkgdepot.build.fetch import RepoSpec, apt_indexes, download, required_debs, rpm_indexes
from pkgdepot.build.pack import clamp_times, pack, source_date_epoch
from pkgdepot.build.resolve import Index, Locked, read_lock, resolve, write_lock
from pkgdepot.build.tree import Template, TemplateError
from pkgdepot.build.unpack import unpack
from pkgdepot.progress import Progress


@dataclass
class BuildConfig:
    family: str
    depot: str
    repositories: list[RepoSpec]
    replacements: dict[str, str] = field(default_factory=dict)
    include_required: bool = True


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
    return BuildConfig(family, depot_url, repos, dict(repl),
                       bool(data.get("include_required", family == "deb")))


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


def appliance(packages: list[Locked], family: str, out: Path, cache: Path) -> Path:
    """The files of the packages, unpacked without running anything, and a
    manifest (packages, files, config files)."""
    total = sum(p.size for p in packages)
    with Progress(f"downloading {len(packages)} packages", total) as bar:
        files = download(packages, cache, bar.advance)
    manifest: dict[str, Any] = {"packages": []}
    with Progress("unpacking", len(packages), unit="packages") as bar:
        for p in sorted(packages):
            u = unpack(files[p], out, family)
            manifest["packages"].append({
                "name": p.name, "version": p.version, "arch": p.arch, "sha256": p.sha256,
                "files": u.files, "conffiles": u.conffiles})
            bar.advance(1)
    path = out / ".pkgdepot-manifest.json"
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def run(template: Template, set_name: str, *, depot: str | None, snapshot: str | None,
        lock_in: Path | None, lock_out: Path | None, out: Path, cache: Path,
        appliance_mode: bool, fmt: str = "dir") -> tuple[list[Locked], Path]:
    cfg = build_config(template, depot, snapshot)
    if lock_in is not None:
        packages, _meta = read_lock(lock_in)
    else:
        with tempfile.TemporaryDirectory(prefix="pkgdepot-build-") as tmp:
            packages = lock(template, set_name, cfg, Path(tmp))
    if lock_out is not None:
        write_lock(lock_out, packages, {"template": str(template.path), "set": set_name,
                                        "family": cfg.family})
    if not appliance_mode and lock_out is not None:
        return packages, lock_out  # resolve only
    if not appliance_mode:
        raise TemplateError(
            "building a configured template (registered and configured by the target's own "
            "dpkg or rpm) is not available yet",
            hint="use --appliance for the files of the resolved packages and a manifest, "
                 "or --write-lock FILE to only resolve")
    if fmt == "dir":
        appliance(packages, cfg.family, out, cache)
        return packages, out
    epoch = source_date_epoch()
    with tempfile.TemporaryDirectory(prefix="pkgdepot-root-", dir=out.parent) as tmp:
        root = Path(tmp) / "root"
        appliance(packages, cfg.family, root, cache)
        if epoch is not None:
            clamp_times(root, epoch)
        return packages, pack(root, out, fmt, epoch)
