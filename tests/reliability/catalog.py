"""The catalog (catalog.sqlite) locked by another process, or damaged by
garbage written over it: the depot refuses to start with a message naming
the file and the fix, and `pkgdepot repair-catalog` brings it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.depot import ROOT, DepotProcess
from tests.reliability.outcome import Outcome, verify_blobs
from tests.reliability.site import INDEX, Site
from tests.support.upstream import Upstream

LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA locking_mode=EXCLUSIVE")
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _start_fails(depot: DepotProcess, out: Outcome, *needles: str) -> str:
    """Start must fail, and its log must contain every needle."""
    t0 = time.monotonic()
    seen = len(depot.log())
    try:
        depot.start(timeout=30)
    except RuntimeError:
        text = depot.log()[seen:]
        for n in needles:
            out.check(n in text, f"the start error does not say {n!r}:\n{text[-1500:]}")
        out.refused += 1
        out.notes.append(f"refused in {time.monotonic() - t0:.1f} s: " + next(
            (line for line in text.splitlines() if line.startswith("pkgdepot:")), text[-300:]))
        return text
    depot.stop()
    out.error("the depot started on a locked or damaged catalog")
    return ""


def _serve_all(depot: DepotProcess, site: Site, out: Outcome) -> None:
    for path in ("/deb/dists/stable/InRelease", f"/deb/{INDEX}"):
        out.requests += 1
        out.check(depot.get(path)[0] == 200, f"{path} not served")
    for p in site.state_a.packages:
        out.fetch_good(depot.port, f"/deb/{p.path}", p.sha256, "serving")


def repair_catalog(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pkgdepot", "repair-catalog", "--data-dir",
                           str(data_dir)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, check=False)


def locked_and_damaged(site: Site, work: Path) -> Outcome:
    out = Outcome("catalog locked or damaged")
    t0 = time.monotonic()
    with Upstream(site.state_a.root.parent) as up:
        depot = DepotProcess(work / "depot", site.config(up))
        catalog = depot.data_dir / "catalog.sqlite"
        with depot:
            _serve_all(depot, site, out)
        snapshots_before = _snapshot_count(depot)
        # 1. another process holds an exclusive lock
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(catalog), "60"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert locker.stdout is not None
            out.check(locker.stdout.readline().strip() == "locked", "the locker did not lock")
            _start_fails(depot, out, str(catalog), "locked by another process", "fuser")
            proc = repair_catalog(depot.data_dir)
            out.check(proc.returncode != 0 and "in use" in proc.stderr,
                      f"repair-catalog ran on a catalog in use: {proc.stderr}")
        finally:
            locker.kill()
            locker.wait()
        with depot:  # the lock is gone: it starts
            _serve_all(depot, site, out)
        # 2. garbage over the middle of the file (the header survives)
        size = catalog.stat().st_size
        with open(catalog, "r+b") as f:
            f.seek(size // 2)
            f.write(os.urandom(max(4096, size // 4)))
        _start_fails(depot, out, str(catalog), "damaged", "pkgdepot repair-catalog")
        proc = repair_catalog(depot.data_dir)
        out.check(proc.returncode == 0, f"repair-catalog failed: {proc.stderr}")
        out.notes.append("repair (partly damaged): " + " / ".join(proc.stdout.splitlines()))
        with depot:
            _serve_all(depot, site, out)
        out.notes.append(f"snapshots: {snapshots_before} before, {_snapshot_count(depot)} "
                         "after the repair")
        # 3. garbage over the whole file
        catalog.write_bytes(os.urandom(catalog.stat().st_size))
        for side in ("-wal", "-shm"):
            catalog.with_name(catalog.name + side).unlink(missing_ok=True)
        _start_fails(depot, out, str(catalog), "pkgdepot repair-catalog")
        proc = repair_catalog(depot.data_dir)
        out.check(proc.returncode == 0, f"repair-catalog failed: {proc.stderr}")
        out.notes.append("repair (all garbage): " + " / ".join(proc.stdout.splitlines()))
        out.check(len(list(depot.data_dir.glob("catalog.sqlite.damaged-*"))) >= 1,
                  "the damaged catalog was not kept aside")
        with depot:
            _serve_all(depot, site, out)
        verify_blobs(depot.data_dir, out)
    out.seconds = time.monotonic() - t0
    return out


def _snapshot_count(depot: DepotProcess) -> int:
    proc = subprocess.run([sys.executable, "-m", "pkgdepot", "snapshot", "list", "--json",
                           "--data-dir", str(depot.data_dir), "--config",
                           str(depot.config_path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False)
    if proc.returncode != 0:
        return -1
    return sum(len(v) for v in json.loads(proc.stdout).values())
