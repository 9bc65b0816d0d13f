"""The data directory's file system fills up (a small tmpfs, mounted in a
private mount namespace of the depot process, so nothing leaks to the host).

The test reaches the depot's view of it through /proc/PID/root and fills it
with a filler file: the depot must keep serving what it has, answer new
misses with 503 and a message that says why, never keep a file cut short by
ENOSPC, log it, and go back to normal by itself once the filler is gone."""

from __future__ import annotations

import concurrent.futures
import errno
import os
import time
from pathlib import Path

from tests.depot import DepotProcess
from tests.reliability.outcome import Outcome, fetch, verify_blobs
from tests.reliability.site import INDEX, Site
from tests.support.upstream import Upstream

TMPFS_MB = 16
MOUNT = 'mount -t tmpfs -o size={mb}m pkgdepot-test "$0" && exec "$@"'


def _fill(path: Path, leave: int = 0) -> int:
    """Grow the filler file until at most `leave` bytes are free; its size."""
    st = os.statvfs(path.parent)
    room = st.f_bavail * st.f_frsize - leave
    with open(path, "ab") as f:
        try:
            while room > 0:
                n = f.write(b"\0" * min(room, 1 << 20))
                f.flush()
                room -= n
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return path.stat().st_size


def _writing(tmp: Path) -> bool:
    """Whether a download's temporary file in `tmp` has bytes in it."""
    for t in tmp.iterdir():
        try:
            if t.name.startswith("dl-") and t.stat().st_size > 0:
                return True
        except FileNotFoundError:
            continue
    return False


def disk_full(site: Site, work: Path) -> Outcome:
    out = Outcome("data directory full (ENOSPC)")
    t0 = time.monotonic()
    pkgs = site.state_a.packages
    data = work / "depot" / "data"
    data.mkdir(parents=True)
    wrapper = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               MOUNT.format(mb=TMPFS_MB), str(data)]
    with Upstream(site.state_a.root.parent) as up:
        depot = DepotProcess(work / "depot", site.config(up), wrapper=wrapper)
        with depot:
            assert depot.proc is not None
            seen = Path(f"/proc/{depot.proc.pid}/root") / str(data).lstrip("/")
            filler = seen / "filler"
            out.check(os.statvfs(seen).f_blocks * os.statvfs(seen).f_frsize
                      <= TMPFS_MB << 20, "the data directory is not on the small tmpfs")
            for path in ("/deb/dists/stable/InRelease", f"/deb/{INDEX}"):
                out.check(depot.get(path)[0] == 200, f"priming {path}")
            have = pkgs[:3]
            for p in have:
                _good(depot, p.path, p.sha256, out, "before")
            # clients get the last byte once a file is verified, before it is moved
            # into the store and recorded: fill the disk only once all three are
            # (a record cut short by the full disk would, rightly, make a miss)
            out.check(_recorded(depot, [p.path for p in have]), "files recorded before filling")
            # 1. full: hits go on, misses are refused with a reason
            _fill(filler)
            out.notes.append(f"filled the {TMPFS_MB} MB tmpfs ({filler.stat().st_size} "
                             "bytes of filler)")
            for p in have:
                _good(depot, p.path, p.sha256, out, "hit while full")
            for p in pkgs[3:6]:
                got = fetch(depot.port, f"/deb/{p.path}")
                out.requests += 1
                if got.status == 503 and b"full" in got.body:
                    out.refused += 1
                else:
                    out.error(f"miss while full: HTTP {got.status} {got.body[:200]!r}")
            time.sleep(1.1)  # the InRelease is due for revalidation: served all the same
            got = fetch(depot.port, "/deb/dists/stable/InRelease")
            out.requests += 1
            out.check(got.status == 200 and got.body == (
                site.state_a.root / "dists/stable/InRelease").read_bytes(),
                f"InRelease while full: HTTP {got.status}")
            # 2. the disk fills up in the middle of a download
            filler.unlink()
            p = pkgs[6]
            up.stall_body(f"/debian/{p.path}", 50_000, 1.2)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pending = pool.submit(fetch, depot.port, f"/deb/{p.path}")
                # fill the disk once the depot is writing the download (not when
                # the upstream has sent its first bytes: the depot may not have
                # opened its temporary file yet, and would then refuse the miss)
                deadline = time.monotonic() + 10
                while not _writing(seen / "tmp") and time.monotonic() < deadline:
                    time.sleep(0.01)
                _fill(filler)
                got = pending.result()
            out.requests += 1
            if got.status == 200 and got.complete:
                out.error("a download that hit ENOSPC was served as complete")
            else:
                out.refused += 1
            out.check(not [t for t in (seen / "tmp").iterdir()],
                      "a partial download was left in tmp/")
            # 3. space returns: back to normal without a restart
            filler.unlink()
            up.clear_faults()
            for p in pkgs[3:7]:
                _good(depot, p.path, p.sha256, out, "after space returned")
            log = depot.log()
            # (not just "full": the test's own directory name has that word)
            out.check("data directory is full" in log, "the depot did not log the full disk")
            out.notes.append("logged: " + next(
                (line.split(" -> ", 1)[-1] for line in log.splitlines()
                 if "data directory is full" in line), ""))
            cut = pkgs[6].path
            out.check("filled up after" in log, "ENOSPC mid-download was not logged; of "
                      f"{cut} the depot logged: " + " | ".join(
                          line[-300:] for line in log.splitlines() if cut in line))
            verify_blobs(seen, out)
            depot.stop()
            # the tmpfs went away with the depot's mount namespace
        out.check(not any(data.iterdir()), "the tmpfs leaked into the host's view")
    out.seconds = time.monotonic() - t0
    return out


def _recorded(depot: DepotProcess, paths: list[str], timeout: float = 30.0) -> bool:
    """Whether every path is answered from the store (HEAD says HIT) in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(depot.head(f"/deb/{p}").get("X-Pkgdepot-Cache") == "HIT" for p in paths):
            return True
        time.sleep(0.05)
    return False


def _good(depot: DepotProcess, path: str, sha: str, out: Outcome, what: str) -> None:
    out.fetch_good(depot.port, f"/deb/{path}", sha, what)

