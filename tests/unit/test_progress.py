"""Progress without a terminal: plain lines with amounts, rate and ETA."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import sys
import time

import pytest

from pkgdepot.progress import Progress, human_bytes, human_seconds
from tests.depot import ROOT


def test_plain_lines_bytes() -> None:
    out = io.StringIO()  # not a terminal
    with Progress("verify", 4_000_000, stream=out, interval=0) as bar:
        time.sleep(0.01)
        bar.advance(1_000_000)
        bar.advance(3_000_000)  # the end: no progress line, the done line follows
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"verify: 1\.0 MB of 4\.0 MB \(25%\), [\d.]+ [KMG]?B/s, ETA \d+ s",
                        lines[0]), lines[0]
    assert re.fullmatch(r"verify: done, 4\.0 MB in \d+ s \([\d.]+ [KMG]?B/s\)", lines[1]), lines
    assert len(lines) == 2


def test_plain_lines_items_and_interval() -> None:
    out = io.StringIO()
    with Progress("gc: scanning blobs", 256, unit="dirs", stream=out, interval=3600) as bar:
        for _ in range(256):
            bar.advance(1)
    lines = out.getvalue().splitlines()
    # no line before the end: the interval has not passed
    assert re.fullmatch(r"gc: scanning blobs: done, 256 dirs in \d+ s \(\d+ dirs/s\)", lines[0])
    assert len(lines) == 1


def test_failure_says_stopped() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), Progress("import", 10, unit="files", stream=out,
                                               interval=0) as bar:
        bar.advance(3)
        raise RuntimeError("disk full")
    assert out.getvalue().splitlines()[-1].startswith("import: stopped, 3 files in ")


def test_human_units() -> None:
    assert human_bytes(999) == "999 B"
    assert human_bytes(1_500_000) == "1.5 MB"
    assert human_seconds(59.6) == "60 s"
    assert human_seconds(3599) == "59 min 59 s"
    assert human_seconds(7300) == "2 h 01 min"


def test_plain_lines_at_most_one_per_interval() -> None:
    """Many small steps: one line per interval at most, then the final line."""
    out = io.StringIO()
    start = time.monotonic()
    with Progress("unpacking", 400, unit="packages", stream=out, interval=0.1) as bar:
        for _ in range(400):
            time.sleep(0.001)
            bar.advance(1)
    elapsed = time.monotonic() - start
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("unpacking: done, 400 packages in ")
    assert 1 <= len(lines) - 1 <= elapsed / 0.1 + 1, lines
    assert all(re.fullmatch(r"unpacking: \d+ packages of 400 packages \(\d+%\), .*", ln)
               for ln in lines[:-1]), lines


@pytest.mark.parametrize("unit", ["B", "steps"])
def test_rich_bar_on_a_terminal(unit: str) -> None:
    """On a real terminal (a pty from `script`) a rich bar is drawn, for
    bytes and for items, whose rate rich does not know at the start: drawing
    it then must not fail."""
    code = ("import time\nfrom pkgdepot.progress import Progress\n"
            f"with Progress('installing', 20, unit='{unit}') as bar:\n"
            "    for _ in range(20):\n        time.sleep(0.02)\n        bar.advance(1)\n")
    proc = subprocess.run(["script", "-qec", f"{sys.executable} -c {shlex.quote(code)}",
                           "/dev/null"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and "Traceback" not in proc.stdout, proc.stdout
    assert "installing" in proc.stdout and "100%" in proc.stdout
    assert "20/20" in proc.stdout and "installing: done" not in proc.stdout
