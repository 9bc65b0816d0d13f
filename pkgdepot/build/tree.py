"""The template tree: TREE/DISTRO/VERSION/ARCH with a `config/` directory
allowed at any level (seed 002).

A file lower in the tree replaces the same file higher up, except package
lists: `SET.list` files merge down the tree. In a list, one package per line,
`#` starts a comment, `name=version` pins a version, a trailing `-` removes a
package inherited from above, and `@OTHER` includes the set OTHER (merged the
same way). Every merged line remembers the file and line it came from, for
`pkgdepot build --explain`. `overlay/` (files copied into the root) and
`post-install.d/` (scripts run inside the root in name order) merge by path:
a lower level's file of the same name wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pkgdepot.errors import PkgdepotError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._-]*(:[A-Za-z0-9-]+)?$")
VERSION_RE = re.compile(r"^[A-Za-z0-9.+~:_-]+$")
SET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class TemplateError(PkgdepotError):
    """The template tree or one of its files is invalid."""

    status = 400


@dataclass(frozen=True)
class Origin:
    path: Path
    line: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else str(self.path)


@dataclass(frozen=True)
class Wanted:
    name: str
    pin: str | None
    origin: Origin


@dataclass
class Template:
    """The merged view of one DISTRO/VERSION/ARCH."""

    path: Path                                  # TREE/DISTRO/VERSION/ARCH
    levels: list[Path]                          # the config/ dirs, top first
    files: dict[str, Path] = field(default_factory=dict)     # replace semantics
    overlay: dict[str, Path] = field(default_factory=dict)   # overlay/ files, merged
    scripts: dict[str, Path] = field(default_factory=dict)   # post-install.d/, by name
    removed: dict[str, dict[str, Origin]] = field(default_factory=dict)  # set -> name -> where

    @property
    def distro(self) -> str:
        return self.path.parent.parent.name

    @property
    def version(self) -> str:
        return self.path.parent.name

    @property
    def arch(self) -> str:
        return self.path.name

    def sets(self) -> list[str]:
        names = set()
        for level in self.levels:
            names |= {p.stem for p in level.glob("*.list")}
        return sorted(names)

    def packages(self, set_name: str, _seen: tuple[str, ...] = ()) -> dict[str, Wanted]:
        """The merged package list of a set: name -> what was asked and where."""
        if not SET_RE.match(set_name):
            raise TemplateError(f"{set_name!r} is not a valid set name")
        if set_name in _seen:
            raise TemplateError("sets include each other in a loop: "
                                + " -> ".join([*_seen, set_name]))
        found = False
        merged: dict[str, Wanted] = {}
        removed: dict[str, Origin] = {}
        for level in self.levels:
            f = level / f"{set_name}.list"
            if not f.is_file():
                continue
            found = True
            try:
                text = f.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise TemplateError(f"{f}: cannot read the package list: {e}",
                                    hint="package lists are UTF-8 text") from e
            for lineno, raw in enumerate(text.splitlines(), 1):
                line = raw.split("#", 1)[0].strip()
                if not line:
                    continue
                origin = Origin(f, lineno)
                if line.startswith("@"):
                    for name, w in self.packages(line[1:], (*_seen, set_name)).items():
                        merged.setdefault(name, w)
                    continue
                if line.endswith("-"):
                    name = line[:-1].strip()
                    _check_name(name, origin)
                    merged.pop(name, None)
                    removed[name] = origin
                    continue
                name, _, pin_text = line.partition("=")
                name, pin = name.strip(), pin_text.strip() or None
                _check_name(name, origin)
                if pin is not None and not VERSION_RE.match(pin):
                    raise TemplateError(f"{origin}: {pin!r} is not a valid version")
                merged[name] = Wanted(name, pin, origin)
                removed.pop(name, None)
        if not found:
            raise TemplateError(f"no {set_name}.list anywhere in the tree above {self.path}",
                                hint="sets here: " + (", ".join(self.sets()) or "none"))
        self.removed[set_name] = removed
        return merged

    def explain(self, set_name: str) -> str:
        """The merged result and where each part came from."""
        pkgs = self.packages(set_name)
        out = [f"template {self.distro}/{self.version}/{self.arch}, set {set_name}",
               "config directories, top first:"]
        out += [f"  {level}" for level in self.levels]
        out.append("files (the lowest wins):")
        out += [f"  {name:<24} {path}" for name, path in sorted(self.files.items())]
        if self.overlay:
            out.append("overlay files:")
            out += [f"  /{name:<23} {path}" for name, path in sorted(self.overlay.items())]
        if self.scripts:
            out.append("post-install scripts, in this order:")
            out += [f"  {name:<24} {path}" for name, path in sorted(self.scripts.items())]
        out.append(f"packages ({len(pkgs)}):")
        for w in sorted(pkgs.values(), key=lambda w: w.name):
            pin = f"={w.pin}" if w.pin else ""
            out.append(f"  {w.name + pin:<32} {w.origin}")
        removed = self.removed.get(set_name, {})
        if removed:
            out.append("removed from inherited lists:")
            out += [f"  {n + '-':<32} {o}" for n, o in sorted(removed.items())]
        return "\n".join(out)


def _check_name(name: str, origin: Origin) -> None:
    if not NAME_RE.match(name):
        raise TemplateError(f"{origin}: {name!r} is not a valid package name")


def load(path: Path) -> Template:
    """Load TREE/DISTRO/VERSION/ARCH: every config/ dir from TREE down."""
    path = path.resolve()
    if not path.is_dir():
        raise TemplateError(f"{path} is not a directory",
                            hint="give TREE/DISTRO/VERSION/ARCH, e.g. templates/debian/12/amd64")
    tree = path.parents[2] if len(path.parents) >= 3 else path
    chain = [tree / p for p in reversed(list(path.relative_to(tree).parents))] + [path]
    levels = [d / "config" for d in chain if (d / "config").is_dir()]
    if not levels:
        raise TemplateError(f"no config/ directory from {tree} down to {path}")
    t = Template(path, levels)
    for level in levels:
        for f in sorted(level.iterdir()):
            if f.is_symlink():
                raise TemplateError(f"{f}: symbolic links are not allowed in a template tree")
            if f.is_file() and f.suffix != ".list":
                t.files[f.name] = f
        overlay = level / "overlay"
        if overlay.is_dir():
            for f in sorted(overlay.rglob("*")):
                if f.is_file() or f.is_symlink():
                    t.overlay[str(f.relative_to(overlay))] = f
        scripts = level / "post-install.d"
        if scripts.is_dir():
            for f in sorted(scripts.iterdir()):
                if f.is_symlink() or not f.is_file():
                    raise TemplateError(f"{f}: a post-install script must be a plain file")
                t.scripts[f.name] = f
    return t
