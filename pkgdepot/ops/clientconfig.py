"""`pkgdepot client-config apt|dnf|zypper --depot URL`: point a machine's
package manager at the depot.

Without --repo, the machine's own repositories go through the depot: apt gets
a proxy snippet (apt.conf.d), dnf's .repo files get `proxy=`, zypper's
http baseurls are rewritten to the depot's host-in-path form
(DEPOT/HOST/PATH). With --repo NAME, one repository file for the depot's
named repository replaces the existing ones (apt: a deb822 .sources file).

Printed by default. With --install, files are written under --root; every
existing repository file that is replaced is kept, renamed with a
`.disabled` suffix, and a record of what was done is kept in
ROOT/var/lib/pkgdepot-client/installed.json, so that --undo restores the
previous files exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pkgdepot.errors import ConfigError, PkgdepotError

TOOLS = ("apt", "dnf", "zypper")
RECORD = "var/lib/pkgdepot-client/installed.json"
DISABLED = ".disabled"
APT_PROXY = "etc/apt/apt.conf.d/01pkgdepot-proxy"
REPO_DIRS = {"apt": "etc/apt/sources.list.d", "dnf": "etc/yum.repos.d",
             "zypper": "etc/zypp/repos.d"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SUITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]*$")


@dataclass(frozen=True, slots=True)
class Options:
    tool: str
    depot: str
    repo: str | None = None
    suites: tuple[str, ...] = ()
    components: tuple[str, ...] = ("main",)
    signed_by: str | None = None
    gpgkey: str | None = None
    unsigned_packages: bool = False


@dataclass(slots=True)
class Plan:
    """Files to write (relative to the root) and existing files to disable."""

    write: dict[str, str] = field(default_factory=dict)
    disable: list[str] = field(default_factory=list)

    def text(self, root: Path) -> str:
        out = []
        for rel in self.disable:
            out.append(f"# disable: {root / rel} -> {rel}{DISABLED}")
        for rel, content in self.write.items():
            out.append(f"# {root / rel}\n{content}")
        return "\n".join(out)


def check_depot(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(f"--depot: {url!r} is not an http:// URL of the depot",
                          hint="e.g. --depot http://depot.example:3142")
    return url.rstrip("/")


def plan(opts: Options, root: Path) -> Plan:
    depot = check_depot(opts.depot)
    if opts.repo is not None and not NAME_RE.match(opts.repo):
        raise ConfigError(f"--repo: {opts.repo!r} is not a repository name of the depot")
    p = Plan()
    repo_dir = root / REPO_DIRS[opts.tool]
    existing = sorted(f for f in (repo_dir.iterdir() if repo_dir.is_dir() else ())
                      if f.is_file() and f.name.endswith(_suffixes(opts.tool)))
    if opts.repo is not None:
        name = f"pkgdepot-{opts.repo}"
        if opts.tool == "apt":
            if (root / "etc/apt/sources.list").is_file():
                p.disable.append("etc/apt/sources.list")
            p.write[f"{REPO_DIRS['apt']}/{name}.sources"] = _apt_sources(opts, depot)
        else:
            p.write[f"{REPO_DIRS[opts.tool]}/{name}.repo"] = _rpm_repo(opts, depot, name)
        p.disable += [str(f.relative_to(root)) for f in existing
                      if f.name != f"{name}.repo"]
        return p
    if opts.tool == "apt":
        p.write[APT_PROXY] = ("// written by pkgdepot client-config: http repositories "
                              f"through the depot\nAcquire::http::Proxy \"{depot}\";\n")
        return p
    if not existing:
        raise PkgdepotError(f"no .repo files in {repo_dir} to send through the depot",
                            hint="name a repository of the depot with --repo NAME")
    for f in existing:
        rel = str(f.relative_to(root))
        text = f.read_text()
        new = _with_proxy(text, depot) if opts.tool == "dnf" else _through_depot(text, depot)
        if new != text:
            p.disable.append(rel)
            p.write[rel] = new
    if not p.write:
        raise PkgdepotError(f"no repository in {repo_dir} has an http:// baseurl that could "
                            "go through the depot (https cannot be cached)",
                            hint="name a repository of the depot with --repo NAME")
    return p


def _suffixes(tool: str) -> tuple[str, ...]:
    return (".list", ".sources") if tool == "apt" else (".repo",)


def _apt_sources(opts: Options, depot: str) -> str:
    if not opts.suites:
        raise ConfigError("apt --repo needs the suites to use: --suite SUITE",
                          hint="e.g. --suite bookworm --suite bookworm-updates")
    for s in (*opts.suites, *opts.components):
        if not SUITE_RE.match(s):
            raise ConfigError(f"{s!r} is not a valid suite or component name")
    lines = ["# written by pkgdepot client-config", "Types: deb",
             f"URIs: {depot}/{opts.repo}/", f"Suites: {' '.join(opts.suites)}",
             f"Components: {' '.join(opts.components)}"]
    if opts.signed_by:
        lines.append(f"Signed-By: {opts.signed_by}")
    return "\n".join(lines) + "\n"


def _rpm_repo(opts: Options, depot: str, name: str) -> str:
    lines = ["# written by pkgdepot client-config", f"[{name}]",
             f"name={opts.repo} through pkgdepot", f"baseurl={depot}/{opts.repo}/",
             "enabled=1", f"gpgcheck={0 if opts.unsigned_packages else 1}"]
    if opts.gpgkey:
        lines += ["repo_gpgcheck=1", f"gpgkey={opts.gpgkey}"]
    if opts.tool == "zypper":
        lines += ["autorefresh=1", "type=rpm-md"]
        if opts.unsigned_packages:
            lines.append("pkg_gpgcheck=0")
    return "\n".join(lines) + "\n"


def _with_proxy(text: str, depot: str) -> str:
    """Every section of a dnf .repo file gets proxy=DEPOT (replacing any proxy=)."""
    out = []
    for line in text.splitlines(keepends=True):
        if re.match(r"\s*proxy\s*=", line):
            continue
        if not line.endswith("\n"):
            line += "\n"
        out.append(line)
        if re.match(r"\s*\[[^\]]+\]\s*$", line):
            out.append(f"proxy={depot}\n")
    return "".join(out)


def _through_depot(text: str, depot: str) -> str:
    """zypper: http baseurls in the depot's host-in-path form (https stays as is:
    the depot does not cache inside TLS)."""
    def repl(m: re.Match[str]) -> str:
        return f"{m.group(1)}{depot}/{m.group(2)}"

    return re.sub(r"(?m)^(\s*baseurl\s*=\s*)http://(?!" + re.escape(urlsplit(depot).netloc)
                  + r"/)(\S+)", repl, text)


# -- installing and undoing ---------------------------------------------------


def install(p: Plan, root: Path) -> list[str]:
    """Disable, then write; record what was done. Lines describing it."""
    record = root / RECORD
    if record.exists():
        raise PkgdepotError(f"a client configuration is already installed ({record})",
                            hint="run the same command with --undo first")
    for rel in p.disable:
        if (root / (rel + DISABLED)).exists():
            raise PkgdepotError(f"{root / rel}{DISABLED} exists already: not overwritten",
                                hint="move it away, then install again")
    for rel in p.write:
        if (root / rel).exists() and rel not in p.disable:
            raise PkgdepotError(f"{root / rel} exists already: not overwritten",
                                hint="move it away, then install again")
    done: list[str] = []
    written: dict[str, str] = {}
    record.parent.mkdir(parents=True, exist_ok=True)
    for rel in p.disable:
        os.rename(root / rel, root / (rel + DISABLED))
        done.append(f"disabled {root / rel} (kept as {rel}{DISABLED})")
        _save(record, p.disable, written)
    for rel, content in p.write.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".pkgdepot-tmp")
        tmp.write_text(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        written[rel] = hashlib.sha256(content.encode()).hexdigest()
        _save(record, p.disable, written)
        done.append(f"wrote {target}")
    _save(record, p.disable, written)
    return done


def _save(record: Path, disabled: list[str], written: dict[str, str]) -> None:
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps({"disabled": disabled, "written": written}, indent=1) + "\n")
    os.replace(tmp, record)


def undo(root: Path) -> list[str]:
    record = root / RECORD
    try:
        data = json.loads(record.read_text())
    except FileNotFoundError as e:
        raise PkgdepotError(f"nothing to undo: {record} does not exist",
                            hint="--undo reverts what --install did, with the same --root") \
            from e
    except ValueError as e:
        raise PkgdepotError(f"{record} is damaged: {e}") from e
    done = []
    for rel, sha in data["written"].items():
        target = root / rel
        try:
            changed = hashlib.sha256(target.read_bytes()).hexdigest() != sha
        except FileNotFoundError:
            continue
        if changed:
            keep = target.with_name(target.name + ".pkgdepot-edited")
            os.rename(target, keep)
            done.append(f"{target} was edited since: kept as {keep.name}")
        else:
            target.unlink()
            done.append(f"removed {target}")
    for rel in data["disabled"]:
        src = root / (rel + DISABLED)
        if src.exists():
            os.rename(src, root / rel)
            done.append(f"restored {root / rel}")
    record.unlink()
    return done
