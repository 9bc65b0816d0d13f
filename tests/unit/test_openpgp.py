"""Signature checks with the real gpgv, given relative paths: gpgv runs in a
home directory of its own, so each path must reach it absolute."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pkgdepot import openpgp
from pkgdepot.errors import VerificationError
from tests.support.keys import GpgKey


def test_relative_paths_reach_gpgv(tmp_path: Path, gpg_key: GpgKey,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(gpg_key.public_keyring, "kr.gpg")
    Path("Release").write_text("Suite: stable\n")
    gpg_key.clearsign(Path("Release"), tmp_path / "InRelease")
    gpg_key.detach_sign(Path("Release"), tmp_path / "Release.gpg")
    openpgp.verify_inline(Path("kr.gpg"), Path("InRelease"), Path("plain"))
    assert Path("plain").read_text() == "Suite: stable\n"
    openpgp.verify_detached(Path("kr.gpg"), Path("Release.gpg"), Path("Release"))
    # and a changed file still fails, also by relative path
    Path("Release").write_text("Suite: evil\n")
    with pytest.raises(VerificationError, match="signature check of Release failed"):
        openpgp.verify_detached(Path("kr.gpg"), Path("Release.gpg"), Path("Release"))
