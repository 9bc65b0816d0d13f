"""OpenPGP signature checks, done by gpgv (the verifier apt itself uses on
Debian 12). Nothing here parses or checks signatures by hand: we only run
gpgv on files and read its machine-readable status lines."""

from __future__ import annotations

import base64
import binascii
import os
import subprocess
import tempfile
from pathlib import Path

from pkgdepot.errors import ConfigError, VerificationError

GPGV = "gpgv"
TIMEOUT = 60


def binary_keyring(keyring: Path, cache_dir: Path) -> Path:
    """gpgv reads only binary keyrings: return `keyring` itself, or a
    dearmored copy of an ASCII-armored one (kept in `cache_dir`)."""
    data = keyring.read_bytes()
    if not data.lstrip().startswith(b"-----BEGIN PGP"):
        return keyring
    body: list[bytes] = []
    out = bytearray()
    in_block = in_headers = False
    for line in data.splitlines():
        line = line.strip()
        if line.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK"):
            in_block, in_headers, body = True, True, []
        elif line.startswith(b"-----END PGP PUBLIC KEY BLOCK"):
            try:
                out += base64.b64decode(b"".join(body), validate=True)
            except binascii.Error as e:
                raise ConfigError(f"{keyring}: damaged armored key block ({e})") from e
            in_block = False
        elif in_block and in_headers:
            if not line:
                in_headers = False
            elif b":" not in line:  # no armor headers at all
                in_headers = False
                body.append(line)
        elif in_block and not line.startswith(b"="):  # "=XXXX" is the CRC24 line
            body.append(line)
    if not out:
        raise ConfigError(f"{keyring}: no public key block found")
    from pkgdepot.store.fs import ensure_dir

    ensure_dir(cache_dir)  # never a link planted in the data directory
    dest = cache_dir / (keyring.name + ".dearmored.gpg")
    fd, tmp = tempfile.mkstemp(dir=cache_dir)
    with os.fdopen(fd, "wb") as f:
        f.write(bytes(out))
    os.replace(tmp, dest)
    return dest


def _run_gpgv(keyring: Path, args: list[str], what: str) -> str:
    """gpgv's status lines for a good signature; VerificationError for a bad
    one, and for a check that could not run (nothing unchecked passes).
    Paths are given to gpgv absolute: it runs in its own home directory."""
    try:
        home_dir = tempfile.TemporaryDirectory(prefix="pkgdepot-gpgv-")
    except OSError as e:
        raise VerificationError(f"cannot check {what}: no temporary directory for gpgv "
                                f"({e})", hint="check free space and TMPDIR") from e
    with home_dir as home:
        cmd = [GPGV, "--homedir", home, "--keyring", str(keyring.absolute()), "--status-fd", "1",
               *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, cwd=home,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError as e:
            raise VerificationError("gpgv is not installed",
                                    hint="apt-get install gpgv") from e
        except subprocess.TimeoutExpired as e:
            raise VerificationError(f"gpgv timed out verifying {what}") from e
        except OSError as e:  # not executable, out of processes or memory...
            raise VerificationError(f"cannot check {what}: gpgv did not run ({e})",
                                    hint="check that gpgv runs: gpgv --version") from e
    status = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0 or "\n[GNUPG:] VALIDSIG " not in "\n" + status:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = "; ".join(detail[-3:]) or "no valid signature"
        raise VerificationError(
            f"signature check of {what} failed: {reason}",
            hint="check the repository's keyring in the config, or whether upstream "
                 "was tampered with")
    return status


def verify_inline(keyring: Path, signed: Path, out: Path) -> None:
    """Check an inline-signed file (InRelease); write the signed text to `out`."""
    _run_gpgv(keyring, ["--output", str(out.absolute()), str(signed.absolute())], signed.name)


def verify_detached(keyring: Path, signature: Path, data: Path) -> None:
    """Check a detached signature (Release.gpg, repomd.xml.asc) of `data`."""
    _run_gpgv(keyring, [str(signature.absolute()), str(data.absolute())], data.name)
