"""Throw-away OpenPGP signing keys for test repositories.

A key lives in a private GNUPGHOME under the directory the caller passes; nothing
touches the invoking user's ~/.gnupg. Keys are RSA 2048 (accepted by gpgv/apt, rpm,
librepo/dnf and libzypp alike), without passphrase, generated in batch mode.

gpg-agent is started on demand by gpg when signing. Its sockets live in the home
directory, and a Unix socket path may not exceed ~107 bytes: when the caller's
directory is too deep, the home directory is put in a short directory created with
``tempfile.mkdtemp(dir="/tmp")`` instead and removed again by :meth:`GpgKey.close`.
``close()`` always kills any agent of that home (``gpgconf --kill all``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "GpgKey",
    "close_cached_keys",
    "gpg_env",
    "kill_gpg_agents",
    "make_gpg_key",
    "shared_gpg_key",
]

# Longest socket path gpg-agent can bind (sun_path is 108 bytes incl. NUL), with room
# for the longest socket name ("S.gpg-agent.browser").
_MAX_HOME_LEN = 107 - len("/S.gpg-agent.browser") - 1
_TIMEOUT = 60


def gpg_env(homedir: Path) -> dict[str, str]:
    """Environment for gpg subprocesses: private home, no display, C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPG_", "GNUPG"))}
    env.pop("DISPLAY", None)
    env["GNUPGHOME"] = str(homedir)
    env["LC_ALL"] = "C"
    return env


def _gpg(homedir: Path, *args: str, input: bytes | None = None) -> bytes:
    cmd = ["gpg", "--homedir", str(homedir), "--batch", "--yes", "--no-tty", *args]
    proc = subprocess.run(
        cmd,
        input=input,
        capture_output=True,
        env=gpg_env(homedir),
        timeout=_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n"
            f"{proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout


@dataclass(frozen=True)
class GpgKey:
    """A signing key: its private home, fingerprint and exported public keys."""

    homedir: Path
    fingerprint: str
    public_keyring: Path  # binary (non-armored) keyring: apt signed-by=, gpgv --keyring
    public_armored: Path  # ASCII-armored public key (.asc)
    _owned_homedir: bool = field(default=False, compare=False, repr=False)

    # -- signing --------------------------------------------------------------------------
    def clearsign(self, src: Path, dest: Path) -> None:
        """Write an inline-signed copy of ``src`` to ``dest`` (apt's InRelease)."""
        _gpg(
            self.homedir,
            "--digest-algo", "SHA256",
            "--local-user", self.fingerprint,
            "--output", str(dest),
            "--clearsign", str(src),
        )

    def detach_sign(self, src: Path, dest: Path, armor: bool = True) -> None:
        """Write a detached signature of ``src`` to ``dest`` (Release.gpg, repomd.xml.asc)."""
        _gpg(
            self.homedir,
            "--digest-algo", "SHA256",
            "--local-user", self.fingerprint,
            *(["--armor"] if armor else []),
            "--output", str(dest),
            "--detach-sign", str(src),
        )

    def verify(self, signed: Path, data: Path | None = None) -> bool:
        """Check a signature with gpgv against :attr:`public_keyring` only."""
        args = ["gpgv", "--keyring", str(self.public_keyring), str(signed)]
        if data is not None:
            args.append(str(data))
        proc = subprocess.run(
            args, capture_output=True, env=gpg_env(self.homedir), timeout=_TIMEOUT, check=False
        )
        return proc.returncode == 0

    # -- life cycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Kill the gpg-agent (and any other daemon) of this home; drop a /tmp home."""
        kill_gpg_agents(self.homedir)
        if self._owned_homedir:
            shutil.rmtree(self.homedir, ignore_errors=True)

    def __enter__(self) -> GpgKey:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _assuan_killagent(sock_path: Path) -> None:
    """Ask the agent listening on ``sock_path`` to exit (Assuan KILLAGENT)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.recv(4096)  # "OK Pleased to meet you"
        s.sendall(b"KILLAGENT\n")
        s.recv(4096)


def kill_gpg_agents(homedir: Path) -> None:
    """Stop every gpg daemon of ``homedir`` and remove its socket directory.

    gpg puts sockets in /run/user/UID/gnupg/d.HASH when /run/user/UID exists, else in
    the home itself; which one applied depends on when the agent started, so both are
    tried directly (``gpgconf --kill`` only looks where it would start one now).
    """
    homedir = Path(homedir)
    if not homedir.exists():
        return
    env = gpg_env(homedir)
    candidates = [homedir / "S.gpg-agent"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["gpgconf", "--homedir", str(homedir), "--list-dirs", "agent-socket"],
            capture_output=True, text=True, env=env, timeout=_TIMEOUT, check=False,
        ).stdout.strip()
        if out:
            candidates.append(Path(out))
    for sock in dict.fromkeys(candidates):
        if sock.is_socket():
            _assuan_killagent(sock)
    for args in (["--kill", "all"], ["--remove-socketdir"]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["gpgconf", "--homedir", str(homedir), *args],
                           capture_output=True, env=env, timeout=_TIMEOUT, check=False)


def make_gpg_key(workdir: Path, name: str = "pkgdepot test") -> GpgKey:
    """Generate a new signing key under ``workdir`` (created if missing).

    ``workdir`` receives ``pubkey.gpg`` and ``pubkey.asc``; the private home is
    ``workdir/gnupg`` (or a short /tmp directory when that path is too long for
    gpg-agent's sockets; see the module doc).
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "gnupg"
    owned = False
    if len(str(home)) > _MAX_HOME_LEN:
        home = Path(tempfile.mkdtemp(prefix="pdg", dir="/tmp"))
        owned = True
    else:
        home.mkdir(mode=0o700, exist_ok=True)
    home.chmod(0o700)
    # No keyserver/dirmngr traffic, ever.
    (home / "gpg.conf").write_text("no-auto-key-locate\nno-auto-key-retrieve\n")
    (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    uid = f"{name} <{name.replace(' ', '-')}@pkgdepot.invalid>"
    _gpg(
        home,
        "--pinentry-mode", "loopback",
        "--passphrase", "",
        "--quick-generate-key", uid, "rsa2048", "sign", "never",
    )
    listing = _gpg(home, "--with-colons", "--list-secret-keys", uid).decode()
    fprs = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
    if not fprs:
        raise RuntimeError(f"no fingerprint found after key generation:\n{listing}")
    fingerprint = fprs[0]
    keyring = workdir / "pubkey.gpg"
    armored = workdir / "pubkey.asc"
    keyring.write_bytes(_gpg(home, "--export", fingerprint))
    armored.write_bytes(_gpg(home, "--armor", "--export", fingerprint))
    key = GpgKey(
        homedir=home,
        fingerprint=fingerprint,
        public_keyring=keyring,
        public_armored=armored,
        _owned_homedir=owned,
    )
    _open_keys.add(key)
    return key


# Safety net: no gpg-agent outlives the test process even if close() was forgotten.
_open_keys: set[GpgKey] = set()


@atexit.register
def _close_open_keys() -> None:
    for k in list(_open_keys):
        k.close()


_cache_lock = threading.Lock()
_cache: dict[tuple[Path, str], GpgKey] = {}


def shared_gpg_key(workdir: Path, name: str = "pkgdepot test") -> GpgKey:
    """Like :func:`make_gpg_key`, but generate only once per (workdir, name) per process.

    Keys made here are closed by :func:`close_cached_keys` (the session fixture does it).
    """
    key = (Path(workdir).resolve(), name)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = make_gpg_key(workdir, name)
        return _cache[key]


def close_cached_keys() -> None:
    """Close every key made by :func:`shared_gpg_key`."""
    with _cache_lock:
        keys = list(_cache.values())
        _cache.clear()
    for k in keys:
        k.close()
