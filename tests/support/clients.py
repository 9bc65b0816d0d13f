"""Real package managers (apt-get, dnf, zypper) with private state, for integration tests.

Each client keeps *all* of its state under the ``workdir`` it is given: configuration,
sources/repos, keyrings, lists and metadata caches, downloaded packages, logs, and
an install root ``workdir/root`` with its own package database. The host's apt, dpkg,
rpm, dnf and zypper configuration and databases are never read for sources or keys and
never written. Every command runs with a timeout and returns a :class:`ClientResult`
(a ``CompletedProcess`` with text output) that keeps stdout and stderr; failures raise
:class:`ClientError` (an ``AssertionError`` whose message holds the full output) unless
``check=False``.

Isolation details that were needed (see each class for the exact options):

* apt: ``APT_CONFIG`` names a private apt.conf that moves every ``Dir::*`` into the
  workdir, including ``Dir::Etc::parts`` (otherwise /etc/apt/apt.conf.d is read),
  ``Dir::Etc::netrcparts`` and ``Dir::State::status`` (the private root's dpkg status);
  dpkg gets ``--root``/``--admindir``/``--force-script-chrootless``. ``APT::Sandbox::User
  "root"``: pytest's /tmp/pytest-of-root is 0700, so the ``_apt`` user could not write
  the partial directories anyway (apt would warn and fall back to root).
* dnf and zypper: rpm's macros on Debian put the database at ``~/.rpmdb`` (the host's is
  /root/.rpmdb). Clients run with ``HOME=workdir/home`` whose ``.rpmmacros`` sets
  ``%_dbpath /var/lib/rpm``, so the database is ``ROOT/var/lib/rpm`` for dnf, zypper and
  ``rpm --root`` alike.
* dnf and zypper verify repomd.xml with gpg, which starts gpg-agents (with sockets under
  /run/user/0/gnupg; librepo even creates /run/user/UID) that outlive the command; apt's
  gpgv method (through apt-key) leaves socket directories there too. So all three
  run inside ``unshare --pid --mount --fork --kill-child`` with a tmpfs on /run/user:
  when the command ends, the namespace and every agent it started end with it. If
  unshare is not permitted, commands run directly and the agents of dnf's key rings are
  killed afterwards with ``gpgconf --kill all``.
* Unavoidable: libdnf verifies repomd.xml.asc in a ``/tmp/tmpdir.XXXXXX`` directory
  (hard-coded, ignores TMPDIR) which it removes again.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tests.support.keys import kill_gpg_agents

__all__ = [
    "AptClient",
    "ClientError",
    "ClientResult",
    "DnfClient",
    "ZypperClient",
    "clean_env",
    "namespace_available",
    "rpm_installed",
]

DEFAULT_TIMEOUT = 120.0

_PROXY_VARS = (
    "http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy",
    "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "ALL_PROXY", "NO_PROXY",
)


class ClientResult(subprocess.CompletedProcess[str]):
    """A finished client command: args, returncode, stdout, stderr, plus extras."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str,
                 duration: float, paths: list[Path] | None = None) -> None:
        super().__init__(list(args), returncode, stdout, stderr)
        self.duration = duration
        self.paths: list[Path] = paths or []  # files produced (downloads)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        return f"{self.stdout}{self.stderr}"

    def describe(self) -> str:
        return (
            f"$ {shlex.join(self.args)}\n"
            f"exit status {self.returncode} after {self.duration:.1f}s\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


class ClientError(AssertionError):
    """A client command failed (or timed out); the message has its full output."""

    def __init__(self, result: ClientResult) -> None:
        super().__init__(result.describe())
        self.result = result


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for client processes: no proxy variables, C locale, no debconf."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    for k in ("APT_CONFIG", "GNUPGHOME", "RPM_CONFIGDIR", "ZYPP_CONF", "ZYPP_LOGFILE",
              "ZYPP_LOCKFILE_ROOT", "ZYPPTMPDIR", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(k, None)
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    env["LC_ALL"] = "C.UTF-8"
    env["LANG"] = "C.UTF-8"
    env["DEBIAN_FRONTEND"] = "noninteractive"
    env.update(extra)
    return env


def _run(args: Sequence[str], *, env: Mapping[str, str], cwd: Path | None, timeout: float,
         check: bool, paths: list[Path] | None = None) -> ClientResult:
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            list(args), env=dict(env), cwd=cwd, capture_output=True, text=True,
            errors="replace", timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )
        result = ClientResult(args, proc.returncode, proc.stdout, proc.stderr,
                              time.monotonic() - t0, paths)
    except subprocess.TimeoutExpired as e:
        def text(b: bytes | str | None) -> str:
            if b is None:
                return ""
            return b.decode(errors="replace") if isinstance(b, bytes) else b

        result = ClientResult(args, -9, text(e.stdout),
                              text(e.stderr) + f"\n[timed out after {timeout}s]",
                              time.monotonic() - t0)
    if check and result.returncode != 0:
        raise ClientError(result)
    return result


# --------------------------------------------------------------------------------------------
# private namespace for gpg-using clients

# Runs (with the system's Python, isolated mode) as PID 1 of a new pid+mount namespace:
# argv[1] = directories to shadow, argv[2] = paths to make private (both "\0"-joined),
# then the command. /run/user becomes an empty tmpfs (gpg-agent sockets). A shadowed
# directory becomes a tmpfs into which every existing entry is bind-mounted back, so
# everything stays visible and writable as before, but *new* entries (libdnf's
# /tmp/tmpdir.XXXXXX, libzypp's /var/lib/YaST2/cookies) land in the tmpfs and vanish
# with the namespace. Private paths are left out of the bind-back (fresh empty dirs).
# mount(2) is called through ctypes: one process instead of a fork per entry.
_NS_INIT = r"""
import ctypes, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
MS_BIND, MS_REC = 4096, 16384
def mount(src, tgt, fstype, flags, data, gone_ok=False):
    if libc.mount(src.encode(), tgt.encode(), fstype.encode() if fstype else None,
                  flags, data.encode() if data else None) != 0:
        e = ctypes.get_errno()
        if gone_ok and e == 2:  # ENOENT: removed (by another process) since listed
            return
        sys.stderr.write(f"pkgdepot-ns: mount {tgt}: {os.strerror(e)}\n")
        sys.exit(97)
shadows = [d for d in sys.argv[1].split("\0") if d]
privates = [p for p in sys.argv[2].split("\0") if p]
mount("pkgdepot-ns", "/run/user", "tmpfs", 0, "mode=0755,size=16m")
os.mkdir(f"/run/user/{os.getuid()}", 0o700)
os.mkdir("/run/user/.keep")
for i, d in enumerate(shadows):
    if not os.path.isdir(d):
        continue
    keep = f"/run/user/.keep/{i}"
    os.mkdir(keep)
    mount(d, keep, None, MS_BIND | MS_REC, None)
    mode = os.stat(d).st_mode & 0o7777
    mount("pkgdepot-ns", d, "tmpfs", 0, f"mode={mode:o},size=256m")
    for name in os.listdir(keep):
        src, tgt = f"{keep}/{name}", f"{d}/{name}"
        if tgt in privates:
            continue
        if os.path.islink(src):
            os.symlink(os.readlink(src), tgt)
            continue
        if os.path.isdir(src):
            os.mkdir(tgt)
        else:
            open(tgt, "w").close()
        mount(src, tgt, None, MS_BIND | MS_REC, None, gone_ok=True)
for p in privates:
    if os.path.isdir(os.path.dirname(p)):
        os.makedirs(p, exist_ok=True)
try:
    sys.exit(subprocess.call(sys.argv[3:]))
except OSError as e:
    sys.stderr.write(f"pkgdepot-ns: {e}\n")
    sys.exit(127)
"""


def _ns_prefix(shadow: Sequence[str] = (), private: Sequence[str] = ()) -> list[str]:
    """Command prefix running the rest in a private namespace (see ``_NS_INIT``)."""
    dirs = list(dict.fromkeys([*shadow, *(p.rsplit("/", 1)[0] for p in private)]))
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    return [
        "unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
        "--mount", "--propagation", "private", "--", python, "-I", "-S", "-c", _NS_INIT,
        "\0".join(dirs), "\0".join(private),
    ]


@functools.cache
def namespace_available() -> bool:
    """Whether commands can run in a private pid+mount namespace (root, unshare allowed).

    Set PKGDEPOT_TEST_NO_NAMESPACE=1 to run clients directly (for debugging).
    """
    if os.environ.get("PKGDEPOT_TEST_NO_NAMESPACE") == "1" or shutil.which("unshare") is None:
        return False
    try:
        proc = subprocess.run([*_ns_prefix(), "true"], capture_output=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _kill_agents(homedirs: Iterable[Path]) -> None:
    for h in homedirs:
        kill_gpg_agents(h)


def _prepare_rpm_home(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    # Debian's rpm defaults %_dbpath to ~/.rpmdb: pin it to the usual place in the root.
    (home / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")


def rpm_installed(root: Path, home: Path) -> dict[str, str]:
    """{name: version-release} of the rpm database in ``root`` (gpg-pubkey excluded)."""
    _prepare_rpm_home(home)
    result = _run(
        ["rpm", "--root", str(root), "-qa", "--qf", r"%{NAME}\t%{VERSION}-%{RELEASE}\n"],
        env=clean_env(HOME=str(home), TMPDIR=str(home)), cwd=None,
        timeout=DEFAULT_TIMEOUT, check=True,
    )
    out: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, _, evr = line.partition("\t")
        if name and name != "gpg-pubkey":
            out[name] = evr
    return out


class _Client:
    """Shared plumbing: work directory, proxy, timeouts, command history."""

    def __init__(self, workdir: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = self.workdir / "root"
        self.root.mkdir(exist_ok=True)
        self.tmp = self.workdir / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self.downloads = self.workdir / "downloads"
        self.downloads.mkdir(exist_ok=True)
        self.timeout = timeout
        self.proxy: str | None = None
        self.history: list[ClientResult] = []

    def set_proxy(self, url: str | None) -> None:
        self.proxy = url or None

    def _exec(self, args: Sequence[str], env: Mapping[str, str], *, check: bool,
              timeout: float | None, cwd: Path | None = None,
              paths: list[Path] | None = None) -> ClientResult:
        result = _run(args, env=env, cwd=cwd or self.workdir,
                      timeout=timeout or self.timeout, check=False, paths=paths)
        self.history.append(result)
        if check and not result.ok:
            raise ClientError(result)
        return result


# --------------------------------------------------------------------------------------------
# apt


class AptClient(_Client):
    """apt-get with a private configuration and a private dpkg root (``workdir/root``).

    ``extra_options`` are appended to every apt-get command line (for example
    ``["-o", "Acquire::Check-Valid-Until=false"]``); ``options`` are written into the
    private apt.conf (``{"Acquire::Retries": "3"}``). Defaults that differ from apt's:
    ``Acquire::Retries "0"`` (a test should see the first failure),
    ``Acquire::http::Timeout "30"``, no recommends, no languages, ``Dpkg::Use-Pty "0"``.
    """

    def __init__(self, workdir: Path, arch: str = "amd64",
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(workdir, timeout)
        self.arch = arch
        self.extra_options: list[str] = []
        self.options: dict[str, str] = {}
        w = self.workdir
        self.etc = w / "etc"
        self.state = w / "state"
        self.cache = w / "cache"
        self.log_dir = w / "log"
        self.home = w / "home"
        self.admindir = self.root / "var" / "lib" / "dpkg"
        for d in (
            self.etc / "apt.conf.d", self.etc / "sources.list.d", self.etc / "trusted.gpg.d",
            self.etc / "preferences.d", self.etc / "auth.conf.d",
            self.state / "lists" / "partial", self.state / "mirrors",
            self.cache / "archives" / "partial", self.log_dir, self.home,
            self.admindir / "info", self.admindir / "updates", self.admindir / "triggers",
            self.admindir / "alternatives",
        ):
            d.mkdir(parents=True, exist_ok=True)
        for f in (self.admindir / "status", self.admindir / "available",
                  self.etc / "sources.list"):
            if not f.exists():
                f.write_text("")
        self.config_file = self.etc / "pkgdepot-apt.conf"
        self._write_config()

    # -- configuration ---------------------------------------------------------------------
    def _config_text(self) -> str:
        etc, root, adm = self.etc, self.root, self.admindir
        items: list[tuple[str, str]] = [
            ("Dir", "/"),
            ("Dir::Etc", str(etc)),
            ("Dir::Etc::main", str(etc / "apt.conf")),
            ("Dir::Etc::parts", str(etc / "apt.conf.d")),
            ("Dir::Etc::sourcelist", str(etc / "sources.list")),
            ("Dir::Etc::sourceparts", str(etc / "sources.list.d")),
            ("Dir::Etc::trusted", str(etc / "trusted.gpg")),
            ("Dir::Etc::trustedparts", str(etc / "trusted.gpg.d")),
            ("Dir::Etc::preferences", str(etc / "preferences")),
            ("Dir::Etc::preferencesparts", str(etc / "preferences.d")),
            ("Dir::Etc::netrc", str(etc / "auth.conf")),
            ("Dir::Etc::netrcparts", str(etc / "auth.conf.d")),
            ("Dir::State", str(self.state)),
            ("Dir::State::lists", str(self.state / "lists")),
            ("Dir::State::status", str(adm / "status")),
            ("Dir::Cache", str(self.cache)),
            ("Dir::Cache::archives", str(self.cache / "archives")),
            ("Dir::Log", str(self.log_dir)),
            ("APT::Architecture", self.arch),
            ("Acquire::Languages", "none"),
            ("Acquire::Retries", "0"),
            ("Acquire::http::Timeout", "30"),
            ("Acquire::PDiffs", "false"),
            ("APT::Sandbox::User", "root"),
            ("APT::Install-Recommends", "false"),
            ("APT::Install-Suggests", "false"),
            ("APT::Get::Assume-Yes", "true"),
            ("APT::Color", "0"),
            ("Dpkg::Use-Pty", "0"),
            ("Dpkg::Progress-Fancy", "0"),
        ]
        if self.proxy:
            items.append(("Acquire::http::Proxy", self.proxy))
        else:
            items.append(("Acquire::http::Proxy", "DIRECT"))
        items.extend(self.options.items())
        lines = [f'{k} "{_apt_quote(v)}";' for k, v in items]
        lines.append(f'APT::Architectures {{ "{self.arch}"; }};')
        dpkg_opts = [
            f"--root={root}",
            f"--admindir={adm}",
            "--force-script-chrootless",
            "--force-not-root",
            "--force-unsafe-io",
            f"--log={self.log_dir / 'dpkg.log'}",
        ]
        lines.append("DPkg::Options { " + " ".join(f'"{o}";' for o in dpkg_opts) + " };")
        # No hooks (none come from the host anyway: Dir::Etc::parts is private).
        for hook in ("DPkg::Pre-Invoke", "DPkg::Post-Invoke", "DPkg::Pre-Install-Pkgs",
                     "APT::Update::Pre-Invoke", "APT::Update::Post-Invoke",
                     "APT::Update::Post-Invoke-Success"):
            lines.append(f"#clear {hook};")
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        self.config_file.write_text(self._config_text())

    def set_sources(self, lines: Sequence[str]) -> None:
        """Replace all sources (one-line format) with ``lines``."""
        for f in (self.etc / "sources.list.d").iterdir():
            f.unlink()
        (self.etc / "sources.list").write_text("".join(f"{line}\n" for line in lines))

    def set_option(self, name: str, value: str) -> None:
        """Put ``name "value";`` into the private apt.conf (after the defaults)."""
        self.options[name] = value

    # -- commands --------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return clean_env(APT_CONFIG=str(self.config_file), TMPDIR=str(self.tmp),
                         HOME=str(self.home))

    def run(self, args: Sequence[str], *, check: bool = True, timeout: float | None = None,
            cwd: Path | None = None) -> ClientResult:
        """Run an apt tool (``["apt-get", ...]``, ``["apt-cache", ...]``) privately."""
        self._write_config()
        args = list(args)
        if args and args[0] in ("apt-get", "apt-cache", "apt-config", "apt-mark"):
            args = [args[0], *self.extra_options, *args[1:]]
        if namespace_available():
            # apt's gpgv method goes through apt-key, whose gpg calls leave socket
            # directories under /run/user/UID/gnupg: keep those in the namespace.
            args = [*_ns_prefix(), *args]
        return self._exec(args, self.env(), check=check, timeout=timeout, cwd=cwd)

    def update(self, *, strict: bool = True, check: bool = True,
               timeout: float | None = None) -> ClientResult:
        """``apt-get update``; ``strict`` adds ``--error-on=any`` (fail on any fetch error)."""
        return self.run(["apt-get", "update", *(["--error-on=any"] if strict else [])],
                        check=check, timeout=timeout)

    def install(self, pkgs: Sequence[str], *, check: bool = True,
                timeout: float | None = None) -> ClientResult:
        """``apt-get install`` into the private root (dpkg --root, private admindir)."""
        return self.run(["apt-get", "install", "--no-install-recommends", *pkgs],
                        check=check, timeout=timeout)

    def remove(self, pkgs: Sequence[str], *, check: bool = True) -> ClientResult:
        return self.run(["apt-get", "remove", *pkgs], check=check)

    def download(self, pkgs: Sequence[str], dest: Path | None = None, *, check: bool = True,
                 timeout: float | None = None) -> ClientResult:
        """``apt-get download`` into ``dest`` (default ``workdir/downloads``); the result's
        ``paths`` are the .deb files that appeared there."""
        dest = Path(dest) if dest is not None else self.downloads
        dest.mkdir(parents=True, exist_ok=True)
        before = set(dest.iterdir())
        result = self.run(["apt-get", "download", *pkgs], check=check, timeout=timeout,
                          cwd=dest)
        result.paths = sorted(p for p in dest.iterdir() if p not in before
                              and p.suffix == ".deb")
        return result

    def clean(self) -> ClientResult:
        """``apt-get clean`` (drops downloaded archives; lists stay)."""
        return self.run(["apt-get", "clean"])

    def candidate(self, name: str) -> str | None:
        """The version apt would install (``apt-cache policy``), or None."""
        result = self.run(["apt-cache", "policy", name])
        for line in result.stdout.splitlines():
            line = line.strip()
            if line.startswith("Candidate:"):
                v = line.split(":", 1)[1].strip()
                return None if v == "(none)" else v
        return None

    def installed(self, root: Path | None = None) -> dict[str, str]:
        """{package: version} for packages fully installed ("ii") in the dpkg root."""
        admindir = (Path(root) / "var/lib/dpkg") if root is not None else self.admindir
        result = _run(
            ["dpkg-query", f"--admindir={admindir}", "-W",
             "-f=${db:Status-Abbrev}\t${Package}\t${Version}\n"],
            env=clean_env(), cwd=None, timeout=self.timeout, check=False,
        )
        if result.returncode not in (0, 1):
            raise ClientError(result)
        out: dict[str, str] = {}
        for line in result.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[0].strip() == "ii":
                out[parts[1]] = parts[2]
        return out

    def list_files(self) -> list[Path]:
        """Index files apt keeps in its private lists directory."""
        return sorted(p for p in (self.state / "lists").iterdir() if p.is_file()
                      and p.name != "lock")


def _apt_quote(v: str) -> str:
    if '"' in v:
        raise ValueError(f"apt configuration values cannot contain quotes: {v!r}")
    return v


# --------------------------------------------------------------------------------------------
# dnf


class DnfClient(_Client):
    """dnf with ``--installroot=workdir/root``, a private dnf.conf and reposdir.

    cachedir, logdir and persistdir are the usual paths, which dnf puts inside the
    install root. Plugins are off (Debian's dnf has no download plugin: :meth:`download`
    uses ``install --downloadonly --downloaddir``). ``options`` adds [main] settings.
    """

    def __init__(self, workdir: Path, *, keepcache: bool = False, releasever: str = "12",
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(workdir, timeout)
        self.keepcache = keepcache
        self.releasever = releasever
        self.options: dict[str, str] = {}
        self.extra_args: list[str] = []
        # metadata_expire=0 still counts metadata fetched in the same second as fresh
        # (libdnf: expired when 0 - age < 0): --refresh makes every command revalidate.
        self.refresh = True
        self.reposdir = self.workdir / "repos.d"
        self.varsdir = self.workdir / "vars"
        self.plugindir = self.workdir / "plugins"
        self.home = self.workdir / "home"
        self.config_file = self.workdir / "dnf.conf"
        for d in (self.reposdir, self.varsdir, self.plugindir):
            d.mkdir(exist_ok=True)
        _prepare_rpm_home(self.home)
        self._write_config()

    def _write_config(self) -> None:
        main = {
            "cachedir": "/var/cache/dnf",
            "logdir": "/var/log",
            "persistdir": "/var/lib/dnf",
            "keepcache": "1" if self.keepcache else "0",
            "install_weak_deps": "False",
            "skip_if_unavailable": "False",
            "gpgcheck": "0",
            "plugins": "0",
            "pluginpath": str(self.plugindir),
            "pluginconfpath": str(self.plugindir),
            "reposdir": str(self.reposdir),
            "varsdir": str(self.varsdir),
            "retries": "1",
            "timeout": "30",
            "countme": "False",
            "best": "True",
            "protected_packages": "",
        }
        if self.proxy:
            main["proxy"] = self.proxy
        main.update(self.options)
        text = "[main]\n" + "".join(f"{k}={v}\n" for k, v in main.items())
        self.config_file.write_text(text)

    def add_repo(self, repo_file_text: str, filename: str | None = None) -> Path:
        """Write a .repo file (e.g. ``RpmRepo.repo_file(...)``) into the private reposdir."""
        if filename is None:
            first = next((ln for ln in repo_file_text.splitlines() if ln.startswith("[")), "")
            filename = (first.strip("[] ") or f"repo{len(list(self.reposdir.iterdir()))}")
        path = self.reposdir / f"{filename}.repo"
        path.write_text(repo_file_text)
        return path

    def clear_repos(self) -> None:
        for f in self.reposdir.iterdir():
            f.unlink()

    def env(self) -> dict[str, str]:
        return clean_env(HOME=str(self.home), TMPDIR=str(self.tmp))

    def base_args(self) -> list[str]:
        return [
            "dnf",
            f"--installroot={self.root}",
            f"--config={self.config_file}",
            f"--setopt=reposdir={self.reposdir}",
            f"--setopt=varsdir={self.varsdir}",
            f"--releasever={self.releasever}",
            "--noplugins",
            "-y",
            *(["--refresh"] if self.refresh else []),
            *self.extra_args,
        ]

    def run(self, args: Sequence[str], *, check: bool = True, timeout: float | None = None,
            paths: list[Path] | None = None) -> ClientResult:
        """Run ``dnf <base args> <args>``."""
        self._write_config()
        cmd = [*self.base_args(), *args]
        if namespace_available():
            # libdnf checks repomd.xml.asc in a hard-coded /tmp/tmpdir.XXXXXX.
            return self._exec([*_ns_prefix(shadow=["/tmp"]), *cmd], self.env(), check=check,
                              timeout=timeout, paths=paths)
        try:
            return self._exec(cmd, self.env(), check=check, timeout=timeout, paths=paths)
        finally:
            _kill_agents((self.root / "var/cache/dnf").glob("*/pubring"))

    def makecache(self, *, check: bool = True, timeout: float | None = None) -> ClientResult:
        return self.run(["makecache"], check=check, timeout=timeout)

    def install(self, pkgs: Sequence[str], *, check: bool = True,
                timeout: float | None = None) -> ClientResult:
        return self.run(["install", *pkgs], check=check, timeout=timeout)

    def upgrade(self, pkgs: Sequence[str] = (), *, check: bool = True) -> ClientResult:
        return self.run(["upgrade", *pkgs], check=check)

    def remove(self, pkgs: Sequence[str], *, check: bool = True) -> ClientResult:
        return self.run(["remove", *pkgs], check=check)

    def download(self, pkgs: Sequence[str], dest: Path | None = None, *, check: bool = True,
                 timeout: float | None = None) -> ClientResult:
        """Fetch packages (and missing dependencies) without installing; ``paths`` lists
        the .rpm files that appeared in ``dest`` (default ``workdir/downloads``)."""
        dest = Path(dest) if dest is not None else self.downloads
        dest.mkdir(parents=True, exist_ok=True)
        before = set(dest.iterdir())
        result = self.run(["install", "--downloadonly", f"--downloaddir={dest}", *pkgs],
                          check=check, timeout=timeout)
        result.paths = sorted(p for p in dest.iterdir() if p not in before
                              and p.suffix == ".rpm")
        return result

    def clean(self) -> ClientResult:
        return self.run(["clean", "all"])

    def installed(self) -> dict[str, str]:
        """{name: version-release} from the install root's rpm database."""
        return rpm_installed(self.root, self.home)


# --------------------------------------------------------------------------------------------
# zypper


class ZypperClient(_Client):
    """zypper with ``--root workdir/root`` and private configuration, lock and log.

    ``ZYPP_CONF`` points at a private zypp.conf, ``ZYPP_LOCKFILE_ROOT`` keeps the
    zypp.pid lock in the workdir, ``ZYPP_LOGFILE`` the log. Repositories, caches and the
    rpm database live in the root. Keys are imported with ``--gpg-auto-import-keys``
    (or :meth:`import_key`). The proxy is passed as ``http_proxy`` (libzypp reads it
    through libproxy).
    """

    def __init__(self, workdir: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(workdir, timeout)
        self.home = self.workdir / "home"
        self.log_dir = self.workdir / "log"
        self.lock_root = self.workdir / "lock"
        self.conf = self.workdir / "zypp.conf"
        for d in (self.log_dir, self.lock_root):
            d.mkdir(exist_ok=True)
        _prepare_rpm_home(self.home)
        self.conf_options: dict[str, str] = {
            "download.use_deltarpm": "false",
            # Default 10 minutes: a republished test repository would go unnoticed.
            "repo.refresh.delay": "0",
            "solver.onlyRequires": "true",
            "rpm.install.excludedocs": "no",
        }
        self.extra_args: list[str] = []

    def env(self) -> dict[str, str]:
        self.conf.write_text(
            "[main]\n" + "".join(f"{k} = {v}\n" for k, v in self.conf_options.items())
        )
        extra = {
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "ZYPP_CONF": str(self.conf),
            "ZYPP_LOGFILE": str(self.log_dir / "zypper.log"),
            "ZYPP_LOCKFILE_ROOT": str(self.lock_root),
            "ZYPPTMPDIR": str(self.tmp),  # libzypp ignores TMPDIR (default /var/tmp)
        }
        if self.proxy:
            extra["http_proxy"] = self.proxy
            extra["HTTP_PROXY"] = self.proxy
        return clean_env(**extra)

    def base_args(self) -> list[str]:
        return ["zypper", "--root", str(self.root), "--non-interactive",
                "--gpg-auto-import-keys", "--no-color", *self.extra_args]

    def run(self, args: Sequence[str], *, check: bool = True, timeout: float | None = None,
            paths: list[Path] | None = None) -> ClientResult:
        cmd = [*self.base_args(), *args]
        if namespace_available():
            # libzypp keeps curl cookies in /var/lib/YaST2/cookies, whatever --root says.
            cmd = [*_ns_prefix(private=["/var/lib/YaST2"]), *cmd]
        return self._exec(cmd, self.env(), check=check, timeout=timeout, paths=paths)

    def add_repo(self, url: str, name: str, *, check: bool = True) -> ClientResult:
        """``zypper addrepo --refresh URL NAME`` (metadata checked on every command)."""
        return self.run(["addrepo", "--refresh", url, name], check=check)

    def remove_repo(self, name: str, *, check: bool = True) -> ClientResult:
        return self.run(["removerepo", name], check=check)

    def import_key(self, key_file: Path) -> ClientResult:
        """Import a public key into the root's rpm database (``rpm --root --import``)."""
        return self._exec(["rpm", "--root", str(self.root), "--import", str(key_file)],
                          self.env(), check=True, timeout=None)

    def refresh(self, *, force: bool = False, check: bool = True,
                timeout: float | None = None) -> ClientResult:
        return self.run(["refresh", *(["--force"] if force else [])], check=check,
                        timeout=timeout)

    def install(self, pkgs: Sequence[str], *, download_only: bool = False,
                check: bool = True, timeout: float | None = None) -> ClientResult:
        """Install into the root, or with ``download_only`` only fill the package cache
        (``paths`` then lists the .rpm files in ``ROOT/var/cache/zypp/packages``)."""
        args = ["install", "--no-recommends", *(["--download-only"] if download_only else []),
                *pkgs]
        cache = self.root / "var/cache/zypp/packages"
        before = set(cache.rglob("*.rpm")) if cache.exists() else set()
        result = self.run(args, check=check, timeout=timeout)
        if download_only and cache.exists():
            result.paths = sorted(p for p in cache.rglob("*.rpm") if p not in before)
        return result

    def remove(self, pkgs: Sequence[str], *, check: bool = True) -> ClientResult:
        return self.run(["remove", *pkgs], check=check)

    def clean(self) -> ClientResult:
        return self.run(["clean", "--all"])

    def installed(self) -> dict[str, str]:
        """{name: version-release} from the root's rpm database."""
        return rpm_installed(self.root, self.home)
