"""The template as a client of the depot (seeds 000 and 001): apt sources
or .repo files that point at the depot, and the distribution's own
repository files kept with a `.disabled` suffix."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pkgdepot.build.fetch import RepoSpec

DISABLED = ".disabled"
APT_SOURCES = "etc/apt/sources.list.d/pkgdepot.sources"
# where each family keeps its repository files, and the names that are theirs
REPO_FILES = {"deb": [("etc/apt", "sources.list"), ("etc/apt/sources.list.d", "*.list"),
                      ("etc/apt/sources.list.d", "*.sources")],
              "rpm": [("etc/yum.repos.d", "*.repo"), ("etc/zypp/repos.d", "*.repo")]}


@dataclass(frozen=True)
class AptSource:
    """One deb822 stanza."""

    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None = None

    def __str__(self) -> str:
        lines = ["Types: deb", f"URIs: {self.uri}", f"Suites: {self.suite}",
                 f"Components: {' '.join(self.components)}"]
        if self.signed_by:
            lines.append(f"Signed-By: {self.signed_by}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RpmRepoFile:
    """One .repo section (dnf, yum and zypper read the same format)."""

    name: str
    baseurl: str
    gpgkey: str | None = None

    def __str__(self) -> str:
        lines = [f"[pkgdepot-{self.name}]", f"name={self.name} through pkgdepot",
                 f"baseurl={self.baseurl}/", "enabled=1", "gpgcheck=1"]
        if self.gpgkey:
            lines.append(f"gpgkey={self.gpgkey}")
        return "\n".join(lines) + "\n"


def disable_distribution_repos(root: Path, family: str) -> list[Path]:
    """Rename the repository files the packages brought to NAME.disabled."""
    moved = []
    for directory, pattern in REPO_FILES[family]:
        for f in sorted((root / directory).glob(pattern)):
            if f.is_file() and not f.is_symlink():
                target = f.with_name(f.name + DISABLED)
                f.replace(target)
                moved.append(target)
    return moved


def write_clients(root: Path, family: str, repos: Iterable[RepoSpec],
                  signed_by: dict[str, str], gpgkeys: dict[str, str]) -> list[Path]:
    """Point the template at the depot (each repo's `depot` is the address
    clients in the template use)."""
    written = []
    if family == "deb":
        path = root / APT_SOURCES
        stanzas = [str(AptSource(r.base, r.suite, r.components, signed_by.get(r.name)))
                   for r in repos]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# written by pkgdepot build: packages come through the depot\n"
                        + "\n".join(stanzas))
        written.append(path)
    else:
        for r in repos:
            path = root / "etc/yum.repos.d" / f"pkgdepot-{r.name}.repo"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(RpmRepoFile(r.name, r.base, gpgkeys.get(r.name))))
            written.append(path)
    return written
