"""SIGKILL at random moments, over and over: of the server while clients
download (misses in flight, hits, mirror files), and of a mirror sync while
it downloads and publishes. After each kill the depot is (re)started and
checked: every file it serves matches its hash, the mirror serves exactly
one complete published state (never a mix, never a half), and every blob in
the store holds the bytes its name says."""

from __future__ import annotations

import concurrent.futures
import hashlib
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.depot import ROOT, DepotProcess
from tests.reliability.outcome import Outcome, fetch
from tests.reliability.site import INDEX, Site
from tests.support.repos import AptRepo
from tests.support.upstream import Upstream


def generated(path: str) -> bytes:
    """Deterministic content for /gen/ paths: 20-200 kB, seeded by the path."""
    seed = hashlib.sha256(path.encode()).digest()
    rng = random.Random(seed)
    return rng.randbytes(20_000 + int.from_bytes(seed[:2]) * 3)


class _Blobs:
    """Re-hash each blob of the store once (blobs never change)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.seen: set[str] = set()

    def check(self, out: Outcome) -> None:
        for blob in (self.data_dir / "blobs").glob("*/*"):
            if blob.name in self.seen:
                continue
            h = hashlib.sha256(blob.read_bytes()).hexdigest()
            out.blobs_verified += 1
            out.check(h == blob.name, f"blob {blob.name} holds other bytes")
            self.seen.add(blob.name)


def _mirror_consistent(depot: DepotProcess, states: list[AptRepo], out: Outcome) -> str:
    """The mirror serves nothing yet, or exactly one state whole."""
    status, _h, rel = depot.get("/mir/dists/stable/InRelease")
    out.requests += 1
    if status == 404:
        return "none"
    match = [s for s in states if (s.root / "dists/stable/InRelease").read_bytes() == rel]
    if status != 200 or not match:
        out.error(f"mirror InRelease: HTTP {status}, matches no published state")
        return "bad"
    state = match[0]
    got = fetch(depot.port, f"/mir/{INDEX}")
    out.requests += 1
    out.check(got.body == (state.root / INDEX).read_bytes(), "the mirror mixes two states")
    for p in state.packages:
        out.fetch_good(depot.port, f"/mir/{p.path}", p.sha256, "mirror")
    return state.packages[0].version


def _clients(depot: DepotProcess, gen_port: int, paths: list[str], site: Site,
             stop: threading.Event, out: Outcome, lock: threading.Lock) -> None:
    """Until `stop`: GET random paths; a complete 200 must be the right file."""
    rng = random.Random()
    known = {f"/deb/{p.path}": p.sha256 for p in site.state_a.packages}
    while not stop.is_set():
        path = rng.choice(paths + list(known))
        got = fetch(depot.port, path, timeout=10)
        want = known.get(path) or hashlib.sha256(
            generated(path.split(f":{gen_port}", 1)[1])).hexdigest()
        with lock:
            out.requests += 1
            if got.status == 200 and got.complete:
                if got.sha256 == want:
                    out.bytes_verified += len(got.body)
                else:
                    out.error(f"{path}: a wrong body served as complete")
        if got.status == 0:
            time.sleep(0.02)  # the server is gone: do not spin


def kill_loop(site: Site, work: Path, kills: int = 30, seed: int = 1) -> Outcome:
    """Kill until `kills` SIGKILLs have landed (a sync that finished before its
    moment counts as a sync, not a kill)."""
    out = Outcome("SIGKILL loop: server and mirror sync")
    out.notes.append(f"seed {seed}")
    rng = random.Random(seed)
    t0 = time.monotonic()
    states = [site.state_a, site.state_b]
    with Upstream(site.state_a.root.parent) as cache_up, \
            Upstream(site.state_a.root.parent, throttle=1_000_000) as mirror_up:
        cache_up.generate("/gen/", generated)
        cache_up.set_throttle(4_000_000)
        mirror = (f'[repos.mir]\nupstreams = ["{mirror_up.url}/debian"]\n'
                  f'keyring = "{site.key.public_armored}"\n[repos.mir.mirror]\n'
                  'suites = ["stable"]\ncomponents = ["main"]\narchitectures = ["amd64"]\n')
        depot = DepotProcess(work / "depot", site.config(cache_up, extra=mirror).replace(
            "revalidate_after = 1", "revalidate_after = 3600"))
        blobs = _Blobs(depot.data_dir)
        lock = threading.Lock()
        server_kills = sync_kills = syncs_done = 0
        published: set[str] = set()
        depot.start()
        try:
            i = -1
            while server_kills + sync_kills < kills and i < 3 * kills:
                i += 1
                if i % 2 == 0:  # the server, with clients in the middle of downloads
                    gen = [f"/127.0.0.1:{cache_up.port}/gen/{i}/{k}/f_1_all.deb"
                           for k in range(6)]
                    stop = threading.Event()
                    with concurrent.futures.ThreadPoolExecutor(6) as pool:
                        for _ in range(6):
                            pool.submit(_clients, depot, cache_up.port, gen, site, stop,
                                        out, lock)
                        time.sleep(rng.uniform(0.05, 0.6))
                        depot.kill()
                        server_kills += 1
                        stop.set()
                    depot.start()
                    out.check(not list((depot.data_dir / "tmp").iterdir()),
                              "unfinished downloads survived a restart")
                    for path in gen:  # whatever was in flight: now whole and right
                        got = fetch(depot.port, path)
                        out.requests += 1
                        want = generated(path.split(f":{cache_up.port}", 1)[1])
                        if got.status == 200 and got.body == want:
                            out.bytes_verified += len(got.body)
                        else:
                            out.error(f"after restart {path}: HTTP {got.status}")
                else:  # a mirror sync, against an upstream that moved to the other state
                    mirror_up.root = states[(i // 2) % 2].root.parent
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "pkgdepot", "mirror", "sync", "mir",
                         "--data-dir", str(depot.data_dir), "--config", str(depot.config_path)],
                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    try:
                        proc.wait(rng.uniform(0.2, 2.0))
                        syncs_done += 1
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                        sync_kills += 1
                published.add(_mirror_consistent(depot, states, out))
                blobs.check(out)
        finally:
            depot.stop()
        blobs.check(out)
    out.kills = server_kills + sync_kills
    out.notes.append(f"{server_kills} server kills, {sync_kills} sync kills, {syncs_done} "
                     f"syncs finished before their kill; mirror states seen: "
                     f"{', '.join(sorted(published))}")
    out.seconds = time.monotonic() - t0
    return out
