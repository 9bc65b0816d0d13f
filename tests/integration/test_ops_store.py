"""Disk limits, gc, verify and import against a real depot process and a
signed apt repository served from 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.depot import ROOT, DepotProcess
from tests.support.keys import GpgKey
from tests.support.repos import AptRepo, DebSpec, build_apt_repo
from tests.support.upstream import Upstream, suffix

KB = 1000
PACKAGES = "dists/stable/main/binary-amd64/Packages"


def depot_config(upstream: Upstream, key: GpgKey, extra: str = "") -> str:
    return f"""
[upstream]
allow_networks = ["127.0.0.0/8"]
[cache]
revalidate_after = 0
{extra}
[repos.deb]
upstreams = ["{upstream.url}/debian"]
keyring = "{key.public_armored}"
"""


def pkgdepot(depot: DepotProcess, *args: str, config: Path | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a pkgdepot command against the depot's data directory (stderr is a
    pipe: progress comes as plain lines)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pkgdepot", *args, "--data-dir", str(depot.data_dir),
         "--config", str(config or depot.config_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"pkgdepot {args} exited {proc.returncode}:\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def fetch(depot: DepotProcess, path: str) -> tuple[str, bytes]:
    status, headers, body = depot.get(path)
    assert status == 200, (path, status, body[:300])
    return headers.get("X-Pkgdepot-Cache", ""), body


def see_index(depot: DepotProcess) -> None:
    fetch(depot, "/deb/dists/stable/InRelease")
    fetch(depot, f"/deb/{PACKAGES}")


def blob(depot: DepotProcess, sha: str) -> Path:
    return depot.data_dir / "blobs" / sha[:2] / sha


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def usage(depot: DepotProcess) -> int:
    return sum(p.stat().st_size for p in (depot.data_dir / "blobs").rglob("*") if p.is_file())


def deb(name: str, version: str = "1.0", size: int = 60 * KB) -> DebSpec:
    return DebSpec(name, version, size_padding=size)


def test_server_evicts_least_recently_used_and_keeps_tagged(
        tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> None:
    """Over cache.max_size the server itself evicts: first a file no index
    vouches for, then the least recently used vouched one, down to 90 % of
    the limit. A package of a tagged snapshot stays although it was used
    longest ago; an evicted file is fetched again on the next request."""
    v1 = build_apt_repo(upstream.root / "debian", gpg_key, [deb("old")])
    depot = DepotProcess(tmp_path / "depot", depot_config(upstream, gpg_key)).start()
    try:
        see_index(depot)
        fetch(depot, "/deb/" + v1.package("old").path)
        pkgdepot(depot, "snapshot", "tag", "deb", "latest", "keep")
        v2 = build_apt_repo(upstream.root / "debian", gpg_key,
                            [deb(f"new{i}") for i in range(1, 5)])
        see_index(depot)
        # a file that no index vouches for (upstream host in the path)
        stray = upstream.root / "loose/pool/stray_1.0_all.deb"
        stray.parent.mkdir(parents=True)
        stray.write_bytes(os.urandom(60 * KB))
        fetch(depot, f"/127.0.0.1:{upstream.port}/loose/pool/stray_1.0_all.deb")
        for i in (1, 2, 3, 4):
            fetch(depot, "/deb/" + v2.package(f"new{i}").path)
        assert fetch(depot, "/deb/" + v2.package("new1").path)[0] == "HIT"  # used again
        shas = {n: v2.package(n).sha256 for n in ("new1", "new2", "new3", "new4")}
        shas["old"] = v1.package("old").sha256
        shas["stray"] = hashlib.sha256(stray.read_bytes()).hexdigest()
        # clients get the last byte once it is verified, before the blob is in place
        wait_for(lambda: all(blob(depot, s).exists() for s in shas.values()), 30, "commits")
        depot.stop()
        total = usage(depot)
        size = {n: blob(depot, s).stat().st_size for n, s in shas.items()}
        # evicting the stray file alone is not enough to get under 90 %; with new2 it is
        limit = int((total - size["stray"] - size["new2"] / 2) / 0.9)
        depot.config_path.write_text(depot_config(upstream, gpg_key,
                                                  f"max_size = {limit}"))
        depot.start()
        wait_for(lambda: not blob(depot, shas["new2"]).exists(), 60, "eviction")
        assert not blob(depot, shas["stray"]).exists()
        for name in ("old", "new1", "new3", "new4"):
            assert blob(depot, shas[name]).exists(), f"{name} should have been kept"
        assert usage(depot) <= 0.9 * limit
        assert "evicted 2 least recently used file(s)" in depot.log()
        before = upstream.count(suffix("new2_1.0_all.deb"))
        state, body = fetch(depot, "/deb/" + v2.package("new2").path)
        assert state == "MISS" and body == (upstream.root / "debian" /
                                            v2.package("new2").path).read_bytes()
        assert upstream.count(suffix("new2_1.0_all.deb")) == before + 1
        assert fetch(depot, "/deb/" + v1.package("old").path)[0] == "HIT"
    finally:
        depot.stop()


def test_gc_beside_running_server(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> None:
    """`pkgdepot gc` deletes unreferenced blobs and enforces the limit while the
    server runs; the server then fetches an evicted file again."""
    repo = build_apt_repo(upstream.root / "debian", gpg_key,
                          [deb("a"), deb("b"), deb("c")])
    with DepotProcess(tmp_path / "depot", depot_config(upstream, gpg_key)) as depot:
        see_index(depot)
        for n in ("a", "b", "c"):
            fetch(depot, "/deb/" + repo.package(n).path)
            time.sleep(0.05)
        wait_for(lambda: all(blob(depot, repo.package(n).sha256).exists() for n in "abc"),
                 30, "commits")
        junk = os.urandom(5000)
        junk_sha = hashlib.sha256(junk).hexdigest()
        blob(depot, junk_sha).parent.mkdir(exist_ok=True)
        blob(depot, junk_sha).write_bytes(junk)
        old = time.time() - 7200
        os.utime(blob(depot, junk_sha), (old, old))
        limited = tmp_path / "limited.toml"
        a_size = blob(depot, repo.package("a").sha256).stat().st_size
        limit = int((usage(depot) - 5000 - a_size / 2) / 0.9)
        limited.write_text(depot_config(upstream, gpg_key, f"max_size = {limit}"))
        out = pkgdepot(depot, "gc", "--grace", "0", config=limited)
        assert "1 unreferenced blob(s) deleted" in out.stdout
        assert "evicted 1 least recently used file(s)" in out.stdout, out.stdout
        assert "gc: scanning blobs: done" in out.stderr and "evict: done" in out.stderr
        assert not blob(depot, junk_sha).exists()
        assert not blob(depot, repo.package("a").sha256).exists()   # the oldest
        assert blob(depot, repo.package("c").sha256).exists()
        state, body = fetch(depot, "/deb/" + repo.package("a").path)
        assert state == "MISS"
        assert body == (upstream.root / "debian" / repo.package("a").path).read_bytes()


def test_verify_reports_and_repairs(tmp_path: Path, upstream: Upstream,
                                    gpg_key: GpgKey) -> None:
    repo = build_apt_repo(upstream.root / "debian", gpg_key, [deb("a"), deb("b")])
    with DepotProcess(tmp_path / "depot", depot_config(upstream, gpg_key)) as depot:
        see_index(depot)
        fetch(depot, "/deb/" + repo.package("a").path)
        fetch(depot, "/deb/" + repo.package("b").path)
        wait_for(lambda: all(blob(depot, repo.package(n).sha256).exists() for n in "ab"),
                 30, "commits")
        assert pkgdepot(depot, "verify").returncode == 0
        bad = blob(depot, repo.package("a").sha256)
        bad.chmod(0o644)
        data = bytearray(bad.read_bytes())
        data[1000] ^= 0xFF
        bad.write_bytes(bytes(data))  # bit rot
        blob(depot, repo.package("b").sha256).unlink()  # lost
        out = pkgdepot(depot, "verify", check=False)
        assert out.returncode == 1
        assert f"BAD blob {repo.package('a').sha256}" in out.stdout
        assert "repo/deb/" + repo.package("a").path in out.stdout
        assert "MISSING blob for cache entry repo/deb/" + repo.package("b").path in out.stdout
        assert "verify: done" in out.stderr
        out = pkgdepot(depot, "verify", "--repair")
        assert "repaired" in out.stdout and not bad.exists()
        assert "all intact" in pkgdepot(depot, "verify").stdout
        for n in ("a", "b"):  # the server fetches good copies again
            state, body = fetch(depot, "/deb/" + repo.package(n).path)
            assert body == (upstream.root / "debian" / repo.package(n).path).read_bytes()
            assert state == "MISS"


def test_import_keeps_only_vouched_files(tmp_path: Path, upstream: Upstream,
                                         gpg_key: GpgKey) -> None:
    repo: AptRepo = build_apt_repo(upstream.root / "debian", gpg_key, [deb("a"), deb("b")])
    archives = tmp_path / "archives"
    (archives / "sub").mkdir(parents=True)
    good = (upstream.root / "debian" / repo.package("a").path).read_bytes()
    (archives / "a_1.0_all.deb").write_bytes(good)
    tampered = bytearray((upstream.root / "debian" / repo.package("b").path).read_bytes())
    tampered[500] ^= 1
    (archives / "sub/b_1.0_all.deb").write_bytes(bytes(tampered))
    (archives / "lock").write_text("")
    (archives / "link.deb").symlink_to(archives / "a_1.0_all.deb")
    with DepotProcess(tmp_path / "depot", depot_config(upstream, gpg_key)) as depot:
        out = pkgdepot(depot, "import", str(archives), check=False)
        assert out.returncode == 1 and "has not seen any package index" in out.stderr
        see_index(depot)
        out = pkgdepot(depot, "import", str(archives))
        assert "imported 1 file(s)" in out.stdout, out.stdout
        assert "skipped 1: no index the depot has seen lists this content" in out.stdout
        assert str(archives / "sub/b_1.0_all.deb") in out.stdout
        assert "skipped 1: not a .deb/.udeb/.rpm file" in out.stdout
        assert "skipped 1: a symbolic link" in out.stdout
        assert "import: done" in out.stderr
        assert "skipped 1: already in the store" in pkgdepot(depot, "import",
                                                             str(archives)).stdout
        state, body = fetch(depot, "/deb/" + repo.package("a").path)
        assert (state, body) == ("HIT", good)
        assert upstream.count(suffix("a_1.0_all.deb")) == 0
        assert (archives / "a_1.0_all.deb").read_bytes() == good  # the source is untouched
        missing = pkgdepot(depot, "import", str(tmp_path / "nope"), check=False)
        assert missing.returncode == 1 and "is not a directory" in missing.stderr
        with sqlite3.connect(depot.data_dir / "catalog.sqlite") as db:
            keys = [r[0] for r in db.execute("SELECT key FROM entries WHERE key LIKE '%.deb'")]
        assert keys == ["repo/deb/" + repo.package("a").path]
