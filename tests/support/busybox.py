"""A statically linked busybox: a shell for tiny real roots in tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def static_busybox() -> Path:
    """The host's busybox if it is statically linked; skips the test otherwise."""
    found = shutil.which("busybox")
    if found is None:
        pytest.skip("busybox is not installed (install busybox-static)")
    proc = subprocess.run(["ldd", found], capture_output=True, text=True, timeout=30)
    if "not a dynamic executable" not in proc.stdout + proc.stderr:
        pytest.skip("busybox is not statically linked (install busybox-static)")
    return Path(found)
