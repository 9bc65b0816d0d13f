#!/usr/bin/env python3
"""Template build benchmark: pkgdepot build against mmdebstrap, one run.

Run as root from the repository root (mmdebstrap installed):

    .venv/bin/python bench/build_bench.py [--runs 3] [--out bench/results/build.json]

The host's Essential/required packages and apt (what `mmdebstrap
--variant=minbase --include=apt` installs) are repacked from the installed system into a
signed repository (suite bookworm), served on 127.0.0.1 and fetched through
one real depot, warmed once. Then, alternating, each run builds into a new
directory with an empty package cache, so every package comes through the
depot each time: pkgdepot's full template (configured by the target's dpkg)
of the shipped example's `minimal` set, `mmdebstrap --variant=minbase`, and
pkgdepot `--appliance` (both pkgdepot builds resolve, write their lock and
build in one call, as mmdebstrap resolves in its run). Reported: median wall
times and CPU times (user + system of everything each build ran), their
ratios to mmdebstrap, and the difference of the two installed package sets.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.depot import DepotProcess  # noqa: E402
from tests.support import hostdebs  # noqa: E402
from tests.support.keys import kill_gpg_agents, make_gpg_key  # noqa: E402
from tests.support.repos import publish_debs  # noqa: E402
from tests.support.upstream import Upstream  # noqa: E402

EXAMPLE = REPO / "examples/templates/debian/12/amd64"


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds (user + system) of the command and
    everything it ran: the CPU time hardly depends on the other load."""
    t = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.monotonic() - t, cpu


def installed(root: Path) -> set[str]:
    out = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package}\n"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    if shutil.which("mmdebstrap") is None:
        raise SystemExit("mmdebstrap is not installed: apt-get install mmdebstrap")
    with tempfile.TemporaryDirectory(prefix="build-bench-") as tmp_s:
        tmp = Path(tmp_s)
        key = make_gpg_key(tmp / "gpg", "build bench")
        try:
            pkgs = hostdebs.installed()
            base = [n for n, f in pkgs.items()
                    if f["Essential"] == "yes" or f["Priority"] == "required"]
            names = hostdebs.closure([*base, "apt"], pkgs)
            debs = hostdebs.repack_all(names, tmp / "repack")
            publish_debs(tmp / "up/debian", key, debs, suite="bookworm")
            with Upstream(tmp / "up") as up, DepotProcess(
                    tmp / "depot", f'[repos.debian]\nupstreams = ["{up.url}/debian"]\n') as d:
                results = run(tmp, d.url, key.public_keyring, args.runs)
        finally:
            kill_gpg_agents(key.homedir)
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


def run(tmp: Path, depot: str, keyring: Path, runs: int) -> dict[str, object]:
    py = sys.executable
    build = [py, "-m", "pkgdepot", "build", str(EXAMPLE), "--set", "minimal", "--depot", depot]
    mm = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
          "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr", "--include=apt", "bookworm"]
    source = f"deb [signed-by={keyring}] {depot}/debian bookworm main"
    times: dict[str, list[float]] = {"pkgdepot": [], "mmdebstrap": [], "appliance": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    sets: dict[str, set[str]] = {}
    for i in range(-1, runs):  # run -1 warms the depot and is not counted
        for what in times:
            out = tmp / f"{what}{i}"
            if what == "mmdebstrap":
                cmd = [*mm, str(out), source]
            else:
                # resolution is timed too, as mmdebstrap's apt resolves in its run
                cmd = [*build, "--write-lock", str(tmp / f"{what}{i}.lock"), "--out", str(out),
                       "--cache", str(tmp / f"cache-{what}{i}")]
                cmd += ["--appliance"] if what == "appliance" else []
            seconds, cpu_seconds = timed(cmd)
            if i >= 0:
                times[what].append(round(seconds, 2))
                cpu[what].append(round(cpu_seconds, 2))
            if what != "appliance" and what not in sets:
                sets[what] = installed(out)
            shutil.rmtree(out)
            shutil.rmtree(tmp / f"cache-{what}{i}", ignore_errors=True)
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    med_cpu = {k: round(statistics.median(v), 2) for k, v in cpu.items()}
    return {
        "runs": runs,
        "load_after": os.getloadavg(),
        "seconds": times,
        "median_seconds": med,
        "pkgdepot_over_mmdebstrap": round(med["pkgdepot"] / med["mmdebstrap"], 3),
        "appliance_over_mmdebstrap": round(med["appliance"] / med["mmdebstrap"], 3),
        "cpu_seconds": cpu,
        "median_cpu_seconds": med_cpu,
        "cpu_pkgdepot_over_mmdebstrap": round(med_cpu["pkgdepot"] / med_cpu["mmdebstrap"], 3),
        "cpu_appliance_over_mmdebstrap": round(med_cpu["appliance"]
                                               / med_cpu["mmdebstrap"], 3),
        "packages": {k: len(v) for k, v in sets.items()},
        "only_pkgdepot": sorted(sets["pkgdepot"] - sets["mmdebstrap"]),
        "only_mmdebstrap": sorted(sets["mmdebstrap"] - sets["pkgdepot"]),
    }


if __name__ == "__main__":
    main()
