"""Hostile input and access control (issue 5, points 3 and 4): the suite's own
tests for them, run by pytest in a subprocess and counted, so that the
report covers every scenario. docs/HOSTILE.md describes each attack, how the
tests try it and what happens; the report links to it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from tests.depot import ROOT
from tests.reliability.outcome import Outcome


@dataclass(frozen=True)
class Area:
    name: str
    anchor: str                  # the section of docs/HOSTILE.md
    how: str
    tests: tuple[str, ...]       # test files, relative to the repository
    fuzz: bool = False           # hypothesis tests: run with more examples


AREAS = (
    Area("hostile input: fuzzed parsers", "fuzzing-the-parsers-hypothesis",
         "Every parser that reads outside data (Release/InRelease, Packages, Sources, "
         "repomd.xml, primary.xml, the request router, Range and conditional headers, "
         "template package lists and build.toml, ar/tar/cpio/rpm payloads) fed generated "
         "input with hypothesis: it parses, or raises the project's own typed error.",
         ("tests/unit/test_fuzz_formats.py", "tests/unit/test_fuzz_http.py",
          "tests/unit/test_fuzz_build.py"), fuzz=True),
    Area("hostile input: bombs, XML entities, escaping archives", "bombs-and-xml-entities",
         "Decompression bombs in indices (every compression) and packages are stopped at "
         "their bound; XML entity expansion and external entities are refused; archive "
         "members with `..`, absolute paths, escaping symlinks or hard links are refused "
         "before anything is written.",
         ("tests/unit/test_bombs.py", "tests/unit/test_unpack.py")),
    Area("hostile requests to a running depot", "requests-from-clients",
         "Raw requests to a real depot: traversal in any encoding, CR/LF and NUL in paths "
         "and queries (no injected header), about 35 URL forms aimed at a loopback service "
         "that is no upstream (no open proxy: it receives nothing), and forged Host headers "
         "(one repository's cache never answers for another).",
         ("tests/integration/test_hostile.py",)),
    Area("access control and the data directory", "access-control",
         "Client networks (default loopback and private ranges), the admin API (off by "
         "default, bearer token, never on the client port), and a data directory created "
         "with safe modes that never follows a planted symbolic link.",
         ("tests/unit/test_access.py", "tests/integration/test_admin.py",
          "tests/unit/test_datadir.py")),
)


def run_area(area: Area, work: Path, examples: int) -> Outcome:
    """Run an area's tests; every test case is a request of the row, a failed
    or skipped one an error."""
    out = Outcome(area.name)
    t0 = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    junit = work / "junit.xml"
    env = {**os.environ, "PKGDEPOT_FUZZ_EXAMPLES": str(examples)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={junit}", "-o", "junit_family=xunit2",
                           *area.tests], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600, check=False)
    if not junit.exists():
        out.error(f"pytest ran nothing (exit {proc.returncode}): {proc.stdout[-500:]}"
                  f"{proc.stderr[-500:]}")
        return out
    names: list[str] = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        out.requests += 1
        names.append(case.get("name", "?"))
        for bad in ("failure", "error", "skipped"):
            el = case.find(bad)
            if el is not None:
                msg = (el.get("message") or "").splitlines()
                out.error(f"{case.get('classname')}::{case.get('name')} {bad}: "
                          f"{msg[0] if msg else ''}")
    out.check(proc.returncode == 0 or bool(out.errors), f"pytest exited {proc.returncode}")
    files = ", ".join(f"`{t}`" for t in area.tests)
    out.notes.append(f"{out.requests} tests in {files}"
                     + (f", each fuzz test with up to {examples:,} generated inputs"
                        if area.fuzz else "")
                     + f"; details: [docs/HOSTILE.md](HOSTILE.md#{area.anchor})")
    counts: dict[str, int] = {}
    for n in names:  # parametrized cases counted under their test's name
        counts[n.split("[", 1)[0]] = counts.get(n.split("[", 1)[0], 0) + 1
    out.notes.append("tests: " + ", ".join(f"`{n}`" + (f" x{c}" if c > 1 else "")
                                           for n, c in counts.items()))
    out.seconds = time.monotonic() - t0
    return out
