"""Time travel through a cache-only named repository: every change of its
metadata that the depot sees is a snapshot, reachable by time and by tag."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.depot import ROOT, DepotProcess
from tests.support.clients import AptClient
from tests.support.keys import GpgKey
from tests.support.repos import AptRepo, DebSpec, build_apt_repo
from tests.support.upstream import Upstream

V1 = [DebSpec("libhello", "1.0", files={"usr/lib/libhello.txt": b"lib1\n"}),
      DebSpec("hello", "1.0", depends="libhello", files={"usr/share/hello/v": b"1\n"}),
      DebSpec("gone", "1.0", files={"usr/share/gone": b"g\n"})]
V2 = [DebSpec("libhello", "1.0", files={"usr/lib/libhello.txt": b"lib1\n"}),
      DebSpec("hello", "2.0", depends="libhello", files={"usr/share/hello/v": b"2\n"}),
      DebSpec("newpkg", "0.1", files={"usr/share/newpkg": b"n\n"})]


@pytest.fixture
def depot(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> Iterator[DepotProcess]:
    cfg = (f'[cache]\nrevalidate_after = 0\n[repos.deb]\nupstreams = ["{upstream.url}/debian"]\n'
           f'keyring = "{gpg_key.public_armored}"\n')
    with DepotProcess(tmp_path / "depot", cfg) as d:
        yield d


def cli(depot: DepotProcess, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pkgdepot", *args, "--data-dir",
                           str(depot.data_dir), "--config", str(depot.config_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def client(tmp_path: Path, name: str, repo: AptRepo, url: str) -> AptClient:
    c = AptClient(tmp_path / name)
    line = repo.sources_line(url).replace("[signed-by=", "[check-valid-until=no signed-by=")
    c.set_sources([line])
    return c


def test_time_travel_by_timestamp_and_tag(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey,
                                          depot: DepotProcess) -> None:
    repo = build_apt_repo(upstream.root / "debian", gpg_key, V1)
    live = client(tmp_path, "live", repo, f"{depot.url}/deb")
    live.update()
    live.install(["hello"])
    assert live.installed()["hello"] == "1.0"
    [first] = json.loads(depot.get("/snapshot/deb/", {"Accept": "application/json"})[2])[
        "snapshots"]
    t1 = first["timestamp"]
    cli(depot, "snapshot", "tag", "deb", t1, "prod-q1")
    time.sleep(1.1)
    # upstream publishes a newer state; the live client follows it
    build_apt_repo(upstream.root / "debian", gpg_key, V2)
    live.update()
    live.install(["hello"])
    assert live.installed()["hello"] == "2.0"
    snaps = json.loads(depot.get("/snapshot/deb/", {"Accept": "application/json"})[2])[
        "snapshots"]
    assert len(snaps) == 2 and snaps[1]["timestamp"] == t1 and snaps[1]["tags"] == ["prod-q1"]
    t2 = snaps[0]["timestamp"]
    # releases.txt: newest first, timestamp then tags
    status, _h, body = depot.get("/snapshot/deb/")
    assert body.decode().splitlines() == [t2, f"{t1} prod-q1"]
    # a machine pinned to a time between the two states gets the old version
    old = client(tmp_path, "old", repo, f"{depot.url}/snapshot/deb/{t1}")
    old.update()
    old.install(["hello"])
    assert old.installed()["hello"] == "1.0"
    # ... and one pinned to the tag likewise, even after the upstream is gone
    upstream.stop()
    tagged = client(tmp_path, "tagged", repo, f"{depot.url}/snapshot/deb/prod-q1")
    tagged.update()
    tagged.install(["hello"])
    assert tagged.installed()["hello"] == "1.0"
    # a time before the first snapshot: 404 that says why
    status, _h, body = depot.get("/snapshot/deb/20000101T000000Z/dists/stable/InRelease")
    assert status == 404 and b"earlier than the first snapshot" in body
    # diff between the states, as text and JSON
    text = cli(depot, "snapshot", "diff", "deb", "prod-q1", "latest")
    assert "^ hello 1.0 -> 2.0 all" in text and "+ newpkg 0.1 all" in text
    assert "- gone 1.0 all" in text
    d = json.loads(cli(depot, "snapshot", "diff", "deb", t1, t2, "--json"))
    assert d["upgraded"] == [{"name": "hello", "from": "1.0", "to": "2.0", "arch": "all"}]
    assert d["added"] == [{"name": "newpkg", "version": "0.1", "arch": "all"}]
    assert d["removed"] == [{"name": "gone", "version": "1.0", "arch": "all"}]
    assert d["downgraded"] == []


def test_unchanged_metadata_makes_no_snapshot(tmp_path: Path, upstream: Upstream,
                                              gpg_key: GpgKey, depot: DepotProcess) -> None:
    repo = build_apt_repo(upstream.root / "debian", gpg_key, V1)
    c = client(tmp_path, "c", repo, f"{depot.url}/deb")
    for _ in range(3):
        c.update()
        time.sleep(0.3)
    listing = cli(depot, "snapshot", "list", "deb")
    assert "deb: 1 snapshot(s)" in listing


def test_dnf_time_travel(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> None:
    """dnf installs from a cache-only repository's snapshot, by time and by tag,
    after upstream published a newer version."""
    from tests.support.clients import DnfClient
    from tests.support.repos import RpmSpec, build_rpm_repo

    repo = build_rpm_repo(upstream.root / "rpms", gpg_key,
                          [RpmSpec("greet", "1.0", files={"/usr/share/greet": b"1\n"})])
    cfg = (f'[cache]\nrevalidate_after = 0\n[repos.rpms]\nupstreams = ["{upstream.url}/rpms"]\n'
           f'keyring = "{gpg_key.public_armored}"\n')
    with DepotProcess(tmp_path / "depot", cfg) as depot:
        live = DnfClient(tmp_path / "live")
        live.add_repo(repo.repo_file("live", f"{depot.url}/rpms"))
        live.install(["greet"])
        assert live.installed()["greet"] == "1.0-1"
        [first] = json.loads(depot.get("/snapshot/rpms/index.json")[2])["snapshots"]
        cli(depot, "snapshot", "tag", "rpms", "latest", "v1")
        time.sleep(1.1)
        build_rpm_repo(upstream.root / "rpms", gpg_key,
                       [RpmSpec("greet", "2.0", files={"/usr/share/greet": b"2\n"})])
        live.upgrade(["greet"])
        assert live.installed()["greet"] == "2.0-1"
        for when in (first["timestamp"], "v1"):
            old = DnfClient(tmp_path / f"old-{when}")
            old.add_repo(repo.repo_file("old", f"{depot.url}/snapshot/rpms/{when}"))
            old.install(["greet"])
            assert old.installed()["greet"] == "1.0-1"
