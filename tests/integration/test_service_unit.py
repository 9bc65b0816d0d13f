"""contrib/pkgdepot.service passes `systemd-analyze verify` without a warning."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.depot import ROOT

UNIT = ROOT / "contrib" / "pkgdepot.service"
HARDENING = ("ProtectSystem=strict", "StateDirectory=pkgdepot", "User=pkgdepot",
             "NoNewPrivileges=yes", "ProtectHome=yes", "CapabilityBoundingSet=\n")


def test_unit_is_hardened() -> None:
    text = UNIT.read_text()
    for line in HARDENING:
        assert line in text, line
    assert "--data-dir ${STATE_DIRECTORY}" in text


def test_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # the unit names the usual install path; point it at this checkout's pkgdepot
    exe = Path(sys.executable).with_name("pkgdepot")
    unit = tmp_path / "pkgdepot.service"
    unit.write_text(UNIT.read_text().replace("/opt/pkgdepot/.venv/bin/pkgdepot", str(exe)))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stderr
