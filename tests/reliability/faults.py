"""Upstream faults against a real depot: each one is injected while a client
asks for a package, then lifted; the client must never get a wrong file as
complete, the store must never keep one, and the next request must get the
right file.

Each scenario takes the Site and a fresh work directory and returns an
Outcome whose `errors` list what broke (empty when the depot held)."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.depot import ROOT, DepotProcess
from tests.reliability.outcome import Outcome, fetch, verify_blobs
from tests.reliability.site import INDEX, Site, running
from tests.support.repos import AptPackage
from tests.support.upstream import Upstream

Inject = Callable[[Upstream, str, AptPackage], None]


def _expect_good(port: int, path: str, pkg: AptPackage, out: Outcome, what: str) -> None:
    out.fetch_good(port, path, pkg.sha256, what)


def _never_wrong(port: int, path: str, pkg: AptPackage, out: Outcome, what: str) -> None:
    """One request while the fault is active: a refusal (5xx or a cut body) is
    the designed answer; a complete 200 must be the right file."""
    got = fetch(port, path)
    out.requests += 1
    out.notes.append(f"{what}: HTTP {got.status}, "
                     f"{'complete' if got.complete else 'cut'} after {len(got.body)} bytes")
    if got.status == 200 and got.complete:
        if got.sha256 == pkg.sha256:
            out.bytes_verified += len(got.body)
        else:
            out.error(f"{what}: a wrong body was served as complete ({len(got.body)} bytes)")
    elif got.status in (200, 502, 503, 504):
        out.refused += 1
    else:
        out.error(f"{what}: unexpected HTTP {got.status}")


FAULTS: dict[str, tuple[str, Inject]] = {
    "reset": ("upstream resets the connection (TCP RST) after 50 kB of the body",
              lambda u, p, _k: u.reset(p, after=50_000)),
    "cut": ("upstream closes the connection after 50 kB of the body",
            lambda u, p, _k: u.cut(p, after=50_000)),
    "stall": ("upstream accepts, then answers nothing for 6 s (read timeout 2 s)",
              lambda u, p, _k: u.stall(p, 6)),
    "stall-mid-body": ("upstream sends 50 kB, then goes silent for 6 s",
                       lambda u, p, _k: u.stall_body(p, 50_000, 6)),
    "length-short": ("upstream announces a Content-Length 1000 bytes short, sends all",
                     lambda u, p, _k: u.lie_length(p, -1000)),
    "length-long": ("upstream announces a Content-Length 1000 bytes long, then closes",
                    lambda u, p, _k: u.lie_length(p, 1000)),
    "wrong-body": ("upstream sends another package's bytes, with a correct length for them",
                   lambda u, p, _k: u.replace(p, b"\x7fELF not a package" * 9000)),
    "corrupt": ("upstream sends the right length, every byte inverted",
                lambda u, p, _k: u.corrupt(p)),
    "status-500": ("upstream answers 500",
                   lambda u, p, _k: u.status(p, 500)),
}


def upstream_faults(site: Site, work: Path, names: list[str] | None = None) -> Outcome:
    """Each fault on its own package, through the named repository (the depot
    knows every package's hash from the signed index), then the same package
    again with the fault lifted; at the end every blob is re-hashed."""
    out = Outcome("upstream faults")
    t0 = time.monotonic()
    chosen = names or list(FAULTS)
    with running(work, site, [site.state_a.root.parent]) as (depot, ups):
        up = ups[0]
        for i, name in enumerate(chosen):
            pkg = site.state_a.packages[i % len(site.state_a.packages)]
            path = f"/deb/{pkg.path}"
            up.clear_faults()
            FAULTS[name][1](up, f"/debian/{pkg.path}", pkg)
            _never_wrong(depot.port, path, pkg, out, name)
            up.clear_faults()
            _expect_good(depot.port, path, pkg, out, f"{name}, after")
            up.wait_idle()
        # Files the depot stored must be the right ones: ask for each again
        for pkg in site.state_a.packages:
            _expect_good(depot.port, f"/deb/{pkg.path}", pkg, out, "stored")
        depot.stop()
        verify_blobs(depot.data_dir, out)
    out.notes.append("faults: " + ", ".join(chosen))
    out.seconds = time.monotonic() - t0
    return out


def unvouched_faults(site: Site, work: Path) -> Outcome:
    """The same transport faults on the /HOST:PORT/path form, where no index
    vouches for the file: a cut, reset, stalled or over-announced body is
    never kept (the depot checks the length it was promised)."""
    out = Outcome("transport faults, no index")
    t0 = time.monotonic()
    with running(work, site, [site.state_a.root.parent], prime=False) as (depot, ups):
        up = ups[0]
        for i, name in enumerate(("reset", "cut", "stall-mid-body", "length-long")):
            pkg = site.state_a.packages[i]
            path = f"/127.0.0.1:{up.port}/debian/{pkg.path}"
            FAULTS[name][1](up, f"/debian/{pkg.path}", pkg)
            _never_wrong(depot.port, path, pkg, out, name)
            up.clear_faults()
            _expect_good(depot.port, path, pkg, out, f"{name}, after")
            _expect_good(depot.port, path, pkg, out, f"{name}, stored")
        depot.stop()
        verify_blobs(depot.data_dir, out)
    out.seconds = time.monotonic() - t0
    return out


def trickle(site: Site, work: Path, rate: float = 40_000) -> Outcome:
    """A slow-loris upstream (a package trickling at `rate` bytes/s): the file
    arrives whole and right, and meanwhile other packages are served at once."""
    out = Outcome("trickling upstream")
    t0 = time.monotonic()
    with running(work, site, [site.state_a.root.parent]) as (depot, ups):
        slow, *others = site.state_a.packages
        ups[0].slow(f"/debian/{slow.path}", rate)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(fetch, depot.port, f"/deb/{slow.path}", None, 120)
            time.sleep(0.5)
            t1 = time.monotonic()
            for pkg in others:
                _expect_good(depot.port, f"/deb/{pkg.path}", pkg, out, "beside a trickle")
            fast = time.monotonic() - t1
            out.check(not waiting.done(), "the trickled file came too fast to prove anything")
            got = waiting.result()
        out.requests += 1
        out.check(got.status == 200 and got.complete and got.sha256 == slow.sha256,
                  f"trickled file: HTTP {got.status} complete={got.complete}")
        out.bytes_verified += len(got.body) if got.sha256 == slow.sha256 else 0
        out.check(fast < 10, f"others took {fast:.1f} s beside the trickle")
        out.notes.append(f"{len(others)} other packages served in {fast:.2f} s while one "
                         f"trickled at {rate / 1000:.0f} kB/s")
        depot.stop()
        verify_blobs(depot.data_dir, out)
    out.seconds = time.monotonic() - t0
    return out


def slow_loris(site: Site, work: Path, rate: float = 200, min_rate: int = 2000,
               window: float = 2) -> Outcome:
    """A slow-loris upstream that trickles slower than `upstream.min_rate`: the
    download is aborted once a window passes below the rate (the waiting
    client's connection is reset, the depot logs why), nothing is kept, and
    the next request gets the file whole from the second upstream (the slow
    one is tried last for a while); once the first one is healthy and the
    second gone, it serves again."""
    out = Outcome("upstream slower than min_rate")
    t0 = time.monotonic()
    roots = [site.state_a.root.parent, site.state_a.root.parent]
    limits = f"min_rate = {min_rate}\nmin_rate_window = {window}\n"
    with running(work, site, roots, upstream=limits) as (depot, ups):
        a, b = ups
        pkg, later = site.state_a.packages[2], site.state_a.packages[3]
        a.slow(f"/debian/{pkg.path}", rate)
        t1 = time.monotonic()
        got = fetch(depot.port, f"/deb/{pkg.path}", timeout=60)
        took = time.monotonic() - t1
        out.requests += 1
        out.notes.append(f"trickling at {rate:.0f} bytes/s (min_rate {min_rate} bytes/s over "
                         f"{window:g} s): HTTP {got.status}, "
                         f"{'complete' if got.complete else 'cut'} after {len(got.body)} "
                         f"bytes, in {took:.1f} s (the whole file would take "
                         f"{(site.state_a.root / pkg.path).stat().st_size / rate:.0f} s)")
        if got.complete:
            out.error(f"the trickled download was not aborted: HTTP {got.status}")
        else:
            out.refused += 1
        out.check(took < window * 4 + 5, f"aborted only after {took:.1f} s")
        out.check("upstream.min_rate" in depot.log(), "no log line names upstream.min_rate")
        _expect_good(depot.port, f"/deb/{pkg.path}", pkg, out, "next request")
        out.check(b.count(f"/debian/{pkg.path}") == 1,
                  "the next request did not go to the second upstream")
        # the slow one is tried last, not abandoned: with B gone, A serves
        a.clear_faults()
        b.stop()
        _expect_good(depot.port, f"/deb/{later.path}", later, out, "first upstream again")
        depot.stop()
        verify_blobs(depot.data_dir, out)
    out.seconds = time.monotonic() - t0
    return out


def graceful_shutdown(site: Site, work: Path) -> Outcome:
    """SIGTERM while downloads are in progress: one that completes within the
    shutdown grace (5 s) is served whole to its client and kept, so after a
    restart it is a HIT without a new upstream request; one that trickles on
    past the grace is abandoned: the depot still exits in time, keeps nothing
    of it, and fetches it again after the restart."""
    out = Outcome("SIGTERM during downloads")
    t0 = time.monotonic()
    with running(work, site, [site.state_a.root.parent]) as (depot, ups):
        up = ups[0]
        quick, slow = site.state_a.packages[4], site.state_a.packages[5]
        paths = {p: f"/debian/{p.path}" for p in (quick, slow)}
        up.slow(paths[quick], 70_000)    # about 3 s in all
        up.slow(paths[slow], 5_000)      # 40 s: longer than the grace
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            clients = {p: pool.submit(fetch, depot.port, f"/deb/{p.path}", None, 60)
                       for p in (quick, slow)}
            deadline = time.monotonic() + 10
            while sum(r.path in paths.values() and r.bytes_sent > 0 for r in up.log) < 2:
                out.check(time.monotonic() < deadline, "the downloads did not start")
                if out.errors:
                    break
                time.sleep(0.05)
            assert depot.proc is not None
            t1 = time.monotonic()
            depot.stop()  # SIGTERM, then waits for the exit
            took = time.monotonic() - t1
            got = clients[quick].result()
            out.requests += 2
            out.verified(got, quick.sha256, "the client of the finishing download")
            out.refused += not clients[slow].result().complete
        out.check(took < 12, f"the depot took {took:.1f} s to stop")
        up.clear_faults()
        depot.start()
        got = fetch(depot.port, f"/deb/{quick.path}")
        out.requests += 1
        out.check(got.headers.get("X-Pkgdepot-Cache") == "HIT" and got.sha256 == quick.sha256,
                  f"after the restart: {got.headers.get('X-Pkgdepot-Cache')}, HTTP {got.status}")
        out.check(up.count(paths[quick]) == 1, "the finished download was fetched again")
        _expect_good(depot.port, f"/deb/{slow.path}", slow, out, "the abandoned one")
        out.check(up.count(paths[slow]) == 2, "the abandoned download was not fetched again")
        out.notes.append(f"SIGTERM {took:.1f} s before the exit; after the restart the "
                         f"finished download was a {got.headers.get('X-Pkgdepot-Cache')} "
                         f"(upstream asked {up.count(paths[quick])} time(s) in all), the "
                         f"abandoned one was asked {up.count(paths[slow])} times")
        depot.stop()
        out.check(not any((depot.data_dir / "tmp").iterdir()), "temporary files left behind")
        verify_blobs(depot.data_dir, out)
    out.seconds = time.monotonic() - t0
    return out


def client_disconnects(site: Site, work: Path, clients: int = 10) -> Outcome:
    """Clients hang up mid-stream (half of those sharing one slow download):
    the download goes on for the others, and the file is kept whole."""
    out = Outcome("clients disconnect mid-stream")
    t0 = time.monotonic()
    with running(work, site, [site.state_a.root.parent]) as (depot, ups):
        pkg = site.state_a.packages[1]
        ups[0].slow(f"/debian/{pkg.path}", 100_000)
        path = f"/deb/{pkg.path}"

        def quitter(_: int) -> None:
            s = socket.create_connection(("127.0.0.1", depot.port), timeout=30)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: depot\r\n\r\n".encode())
            s.recv(20_000)
            s.close()

        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            stayers = [pool.submit(fetch, depot.port, path, None, 120)
                       for _ in range(clients // 2)]
            list(pool.map(quitter, range(clients - clients // 2)))
            out.requests += clients
            for f in stayers:
                out.verified(f.result(), pkg.sha256, "a staying client")
        out.check(ups[0].count(f"/debian/{pkg.path}") == 1, "the download was restarted")
        _expect_good(depot.port, path, pkg, out, "after the disconnects")
        depot.stop()
        verify_blobs(depot.data_dir, out)
    out.seconds = time.monotonic() - t0
    return out


def mirror_flip(site: Site, work: Path) -> Outcome:
    """Two upstream mirrors in different states (B has newer indices and
    packages). The depot got InRelease from A; then A goes down. Packages from
    B does not match A's InRelease: it must not be served as good nor kept.
    Once InRelease is revalidated (from B), the depot serves B's state whole.
    Every snapshot recorded must be consistent."""
    out = Outcome("mirrors in different states")
    t0 = time.monotonic()
    roots = [site.state_a.root.parent, site.state_b.root.parent]
    with running(work, site, roots, prime=False) as (depot, ups):
        a, _b = ups
        inrel = depot.get("/deb/dists/stable/InRelease")
        out.requests += 1
        out.check(inrel[2] == (site.state_a.root / "dists/stable/InRelease").read_bytes(),
                  "InRelease is not A's")
        a.stop()  # A goes away; B, in another state, answers from now on
        got = fetch(depot.port, f"/deb/{INDEX}")
        out.requests += 1
        b_index = (site.state_b.root / INDEX).read_bytes()
        a_index = (site.state_a.root / INDEX).read_bytes()
        if got.status == 200 and got.complete:
            out.check(got.body == a_index, "B's Packages was served under A's InRelease")
        else:
            out.refused += 1
        # once InRelease is revalidated (from B), B's state is served whole
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rel = depot.get("/deb/dists/stable/InRelease")[2]
            out.requests += 1
            if rel == (site.state_b.root / "dists/stable/InRelease").read_bytes():
                break
            time.sleep(0.3)
        else:
            out.error("InRelease never moved to B's state")
        got = fetch(depot.port, f"/deb/{INDEX}")
        out.requests += 1
        out.check(got.status == 200 and got.body == b_index, "B's Packages not served")
        for pkg in site.state_b.packages:
            _expect_good(depot.port, f"/deb/{pkg.path}", pkg, out, "state B")
        # every state the depot recorded pairs an InRelease with its own indices
        status, _h, body = depot.get("/snapshot/deb/index.json")
        out.check(status == 200, "no snapshot list")
        for snap in json.loads(body)["snapshots"]:
            when = snap["timestamp"]
            rel = depot.get(f"/snapshot/deb/{when}/dists/stable/InRelease")[2]
            idx = depot.get(f"/snapshot/deb/{when}/{INDEX}")
            out.requests += 2
            pair = {(site.state_a.root / "dists/stable/InRelease").read_bytes(): a_index,
                    (site.state_b.root / "dists/stable/InRelease").read_bytes(): b_index}
            if idx[0] == 200:
                out.check(pair.get(rel) == idx[2], f"snapshot {when} mixes the two mirrors")
            out.notes.append(f"snapshot {when}: InRelease of "
                             f"{'A' if pair.get(rel) == a_index else 'B'}, index "
                             f"{'present' if idx[0] == 200 else 'absent'}")
        depot.stop()
        verify_blobs(depot.data_dir, out)
    out.seconds = time.monotonic() - t0
    return out


def mirror_sync_flip(site: Site, work: Path) -> Outcome:
    """A mirror sync whose first upstream (A) gives the InRelease, then fails
    for the indices, while the second (B) holds another state: B's indices do
    not match A's InRelease, so the sync publishes nothing; with A back, the
    sync publishes A's state whole."""
    out = Outcome("mirror sync across mirrors in different states")
    t0 = time.monotonic()
    roots = [site.state_a.root.parent, site.state_b.root.parent]
    mirror = ('[repos.deb.mirror]\nsuites = ["stable"]\ncomponents = ["main"]\n'
              'architectures = ["amd64"]\n')
    with running(work, site, roots, extra=mirror, prime=False) as (depot, ups):
        a = ups[0]
        a.status(lambda p: "/binary-" in p, 503)
        ok, log = run_sync(depot)
        out.requests += 1
        out.check(not ok, "the sync published while the mirrors disagreed")
        out.refused += not ok
        out.check(depot.get("/deb/dists/stable/InRelease")[0] == 404, "a state was published")
        a.clear_faults()
        ok, log = run_sync(depot)
        out.requests += 1
        out.check(ok, f"the sync failed with both mirrors good: {log}")
        inrel = depot.get("/deb/dists/stable/InRelease")[2]
        out.check(inrel == (site.state_a.root / "dists/stable/InRelease").read_bytes(),
                  "the published InRelease is not A's")
        out.check(depot.get(f"/deb/{INDEX}")[2] == (site.state_a.root / INDEX).read_bytes(),
                  "the published index is not A's")
        for pkg in site.state_a.packages:
            _expect_good(depot.port, f"/deb/{pkg.path}", pkg, out, "published state")
        depot.stop()
        verify_blobs(depot.data_dir, out)
    out.seconds = time.monotonic() - t0
    return out


def run_sync(depot: DepotProcess, timeout: float = 120) -> tuple[bool, str]:
    """`pkgdepot mirror sync` for the depot's data directory: (succeeded, output)."""
    proc = subprocess.run([sys.executable, "-m", "pkgdepot", "mirror", "sync",
                           "--data-dir", str(depot.data_dir), "--config",
                           str(depot.config_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, check=False)
    return proc.returncode == 0, proc.stdout + proc.stderr
