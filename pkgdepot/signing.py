"""The depot's own OpenPGP signing key, for metadata the depot writes itself
(filtered mirrors). Signing is done by gpg; the key lives in
DATA_DIR/signing and is created on first use. Clients trust it with the
public key that `pkgdepot signing-key` prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pkgdepot.errors import PkgdepotError

USER_ID = "pkgdepot signing key <pkgdepot@localhost>"


class SigningError(PkgdepotError):
    status = 500


class SigningKey:
    def __init__(self, data_dir: Path) -> None:
        self.home = data_dir / "signing"

    def _gpg(self, home: str, *args: str, input_data: bytes | None = None) -> bytes:
        if shutil.which("gpg") is None:
            raise SigningError("gpg is not installed", hint="apt-get install gpg")
        proc = subprocess.run(["gpg", "--homedir", home, "--batch", "--yes", "--no-tty",
                               "--pinentry-mode", "loopback", "--passphrase", "", *args],
                              input=input_data, capture_output=True, timeout=120)
        if proc.returncode != 0:
            raise SigningError(f"gpg {' '.join(args[:2])} failed: "
                               + proc.stderr.decode("utf-8", "replace").strip()[-500:])
        return proc.stdout

    def _session(self) -> str:
        """A short-lived copy of the key's home in a short path (gpg-agent's
        socket paths are limited), so no agent outlives the command."""
        self.ensure()
        tmp = tempfile.mkdtemp(prefix="pkgdepot-gpg-")
        os.chmod(tmp, 0o700)
        for p in self.home.iterdir():
            if p.is_file():
                shutil.copy2(p, tmp)
            elif p.is_dir() and p.name == "private-keys-v1.d":
                shutil.copytree(p, os.path.join(tmp, p.name))
        return tmp

    def _end(self, tmp: str) -> None:
        subprocess.run(["gpgconf", "--homedir", tmp, "--kill", "all"], capture_output=True,
                       timeout=30, check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    def ensure(self) -> None:
        if (self.home / "pubring.kbx").exists():
            return
        from pkgdepot.store.fs import ensure_dir

        ensure_dir(self.home, 0o700)
        tmp = tempfile.mkdtemp(prefix="pkgdepot-gpg-")
        try:
            self._gpg(tmp, "--quick-gen-key", USER_ID, "rsa3072", "sign", "never")
            for p in Path(tmp).iterdir():
                if p.name.startswith("S.") or p.name.endswith(".lock"):
                    continue
                dest = self.home / p.name
                if p.is_dir():
                    shutil.copytree(p, dest, dirs_exist_ok=True)
                else:
                    shutil.copy2(p, dest)
        finally:
            self._end(tmp)

    def public_key(self) -> bytes:
        tmp = self._session()
        try:
            return self._gpg(tmp, "--armor", "--export")
        finally:
            self._end(tmp)

    def sign(self, release: bytes) -> tuple[bytes, bytes]:
        """(InRelease, Release.gpg) for a Release file's text."""
        tmp = self._session()
        try:
            inline = self._gpg(tmp, "--clearsign", "--digest-algo", "SHA512",
                               input_data=release)
            detached = self._gpg(tmp, "--armor", "--detach-sign", "--digest-algo", "SHA512",
                                 input_data=release)
            return inline, detached
        finally:
            self._end(tmp)

    def detach_sign(self, data: bytes) -> bytes:
        tmp = self._session()
        try:
            return self._gpg(tmp, "--armor", "--detach-sign", "--digest-algo", "SHA512",
                             input_data=data)
        finally:
            self._end(tmp)
