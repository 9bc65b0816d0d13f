"""The real apt-get, dnf and zypper, with private state, against signed
repositories that the tests build, served from 127.0.0.1 through the depot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.depot import DepotProcess
from tests.support.clients import AptClient, DnfClient, ZypperClient
from tests.support.keys import GpgKey
from tests.support.repos import AptRepo, DebSpec, RpmRepo, RpmSpec, build_apt_repo, build_rpm_repo
from tests.support.upstream import Upstream, suffix

pytestmark = pytest.mark.clients

DEBS = [
    DebSpec("libhello", "1.0", files={"usr/lib/libhello.txt": b"lib\n"}, size_padding=20_000),
    DebSpec("hello", "1.0", depends="libhello (>= 1.0)",
            files={"usr/bin/hello-world": b"#!/bin/sh\necho hello\n"}, size_padding=50_000),
    DebSpec("other", "2.0", files={"usr/share/other": b"x\n"}),
]
RPMS = [
    RpmSpec("libgreet", "1.0", files={"/usr/share/libgreet/data": b"lib\n"}, size_padding=20_000),
    RpmSpec("greet", "1.0", requires=["libgreet"], files={"/usr/share/greet/hello": b"hi\n"},
            size_padding=30_000),
]


def deb_downloads(up: Upstream) -> int:
    return up.count(suffix(".deb"))


@pytest.fixture
def apt_repo(upstream: Upstream, gpg_key: GpgKey) -> AptRepo:
    return build_apt_repo(upstream.root / "debian", gpg_key, DEBS)


@pytest.fixture
def depot(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> Iterator[DepotProcess]:
    cfg = f"""
[upstream]
allow_networks = ["127.0.0.0/8"]

[cache]
revalidate_after = 2

[repos.deb]
upstreams = ["{upstream.url}/debian"]
keyring = "{gpg_key.public_armored}"

[repos.rpms]
upstreams = ["{upstream.url}/rpms"]
keyring = "{gpg_key.public_armored}"
"""
    with DepotProcess(tmp_path / "depot", cfg) as d:
        yield d


@pytest.mark.parametrize("form", ["host", "named", "proxy"])
def test_apt_installs_through_the_depot(form: str, tmp_path: Path, apt_repo: AptRepo,
                                        depot: DepotProcess, upstream: Upstream) -> None:
    def client(name: str) -> AptClient:
        c = AptClient(tmp_path / name)
        if form == "host":
            c.set_sources([apt_repo.sources_line(f"{depot.url}/127.0.0.1:{upstream.port}/debian")])
        elif form == "named":
            c.set_sources([apt_repo.sources_line(f"{depot.url}/deb")])
        else:
            c.set_sources([apt_repo.sources_line(f"{upstream.url}/debian")])
            c.set_proxy(depot.url)
        return c

    first = client("apt-1")
    first.update()
    first.install(["hello"])
    assert first.installed() == {"hello": "1.0", "libhello": "1.0"}
    assert (first.root / "usr/bin/hello-world").read_bytes() == b"#!/bin/sh\necho hello\n"
    assert deb_downloads(upstream) == 2
    # A second machine: every package comes from the depot, none from upstream.
    second = client("apt-2")
    second.update()
    second.install(["hello"])
    assert second.installed() == {"hello": "1.0", "libhello": "1.0"}
    assert deb_downloads(upstream) == 2


def test_apt_upgrade_after_republish(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey,
                                     apt_repo: AptRepo, depot: DepotProcess) -> None:
    c = AptClient(tmp_path / "apt")
    c.set_sources([apt_repo.sources_line(f"{depot.url}/deb")])
    c.update()
    c.install(["hello"])
    build_apt_repo(upstream.root / "debian", gpg_key,
                   [*DEBS[:1], DebSpec("hello", "2.0", depends="libhello",
                                       files={"usr/bin/hello-world": b"v2\n"})])
    time.sleep(2.2)  # the depot's revalidation window in this test
    c.update()
    c.install(["hello"])
    assert c.installed()["hello"] == "2.0"


def test_corrupt_package_is_rejected_and_not_cached(tmp_path: Path, apt_repo: AptRepo,
                                                   depot: DepotProcess,
                                                   upstream: Upstream) -> None:
    c = AptClient(tmp_path / "apt")
    c.set_sources([apt_repo.sources_line(f"{depot.url}/deb")])
    c.update()
    hello = suffix("/hello_1.0_all.deb")
    upstream.corrupt(hello)
    result = c.install(["hello"], check=False)
    assert not result.ok
    assert "hello" not in c.installed()
    assert "not kept" in depot.log()
    upstream.clear_faults()
    c.install(["hello"])
    assert c.installed()["hello"] == "1.0"
    assert upstream.count(hello) == 2  # the bad copy was not kept


def test_wrong_signing_key_is_refused(tmp_path: Path, upstream: Upstream, apt_repo: AptRepo,
                                      other_gpg_key: GpgKey) -> None:
    """The depot checks InRelease against the repository's configured keyring:
    signed by another key, it is not served (the client's update fails)."""
    cfg = (f'[repos.deb]\nupstreams = ["{upstream.url}/debian"]\n'
           f'keyring = "{other_gpg_key.public_armored}"\n')
    with DepotProcess(tmp_path / "depot", cfg) as d:
        status, _h, body = d.get("/deb/dists/stable/InRelease")
        assert status == 502 and b"signature check" in body
        c = AptClient(tmp_path / "apt")
        c.set_sources([apt_repo.sources_line(f"{d.url}/deb")])
        assert not c.update(check=False).ok
        assert not list((d.data_dir / "blobs").rglob("*.gpg"))


def test_a_signature_check_that_cannot_run_is_a_502(tmp_path: Path, upstream: Upstream,
                                                    apt_repo: AptRepo, gpg_key: GpgKey) -> None:
    """gpgv that cannot be run (here: not executable) checks nothing, so
    nothing passes: InRelease is a 502 that says why, and is not kept."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gpgv").write_text("#!/bin/sh\nexit 0\n")  # would pass anything: not run
    (bin_dir / "gpgv").chmod(0o644)
    cfg = (f'[repos.deb]\nupstreams = ["{upstream.url}/debian"]\n'
           f'keyring = "{gpg_key.public_armored}"\n')
    env = {"PATH": str(bin_dir)}  # the only gpgv (a later one on PATH would be run)
    with DepotProcess(tmp_path / "depot", cfg, env=env) as d:
        for _ in range(2):  # the second request checks again: nothing was kept
            status, _h, body = d.get("/deb/dists/stable/InRelease")
            assert status == 502 and b"gpgv did not run" in body, body
        assert upstream.count("/debian/dists/stable/InRelease") == 2


def test_tampered_inrelease_is_refused(tmp_path: Path, upstream: Upstream, apt_repo: AptRepo,
                                       depot: DepotProcess) -> None:
    inrelease = upstream.root / "debian/dists/stable/InRelease"
    text = inrelease.read_text()
    inrelease.write_text(text.replace("Suite: stable", "Suite: stab1e"))
    status, _h, body = depot.get("/deb/dists/stable/InRelease")
    assert status == 502 and b"signature check" in body
    inrelease.write_text(text)  # upstream repaired: served again
    status, _h, body = depot.get("/deb/dists/stable/InRelease")
    assert status == 200 and body == text.encode()


@pytest.fixture
def rpm_repo(upstream: Upstream, gpg_key: GpgKey) -> RpmRepo:
    return build_rpm_repo(upstream.root / "rpms", gpg_key, RPMS)


@pytest.mark.parametrize("form", ["baseurl", "proxy"])
def test_dnf_installs_through_the_depot(form: str, tmp_path: Path, rpm_repo: RpmRepo,
                                        depot: DepotProcess, upstream: Upstream) -> None:
    def client(name: str) -> DnfClient:
        c = DnfClient(tmp_path / name)
        if form == "baseurl":
            c.add_repo(rpm_repo.repo_file("depot", f"{depot.url}/rpms"))
        else:
            c.add_repo(rpm_repo.repo_file("depot", f"{upstream.url}/rpms", proxy=depot.url))
        return c

    first = client("dnf-1")
    first.install(["greet"])
    assert {k: v for k, v in first.installed().items() if k in ("greet", "libgreet")} == {
        "greet": "1.0-1", "libgreet": "1.0-1"}
    assert upstream.count(suffix(".rpm")) == 2
    second = client("dnf-2")
    second.install(["greet"])
    assert "greet" in second.installed()
    assert upstream.count(suffix(".rpm")) == 2  # the second machine: all from the depot


def test_zypper_installs_through_the_depot(tmp_path: Path, rpm_repo: RpmRepo,
                                           depot: DepotProcess, upstream: Upstream) -> None:
    z = ZypperClient(tmp_path / "zypper")
    z.import_key(rpm_repo.key.public_armored)
    z.add_repo(f"{depot.url}/rpms", "depot")
    z.refresh()
    z.install(["greet"])
    assert "greet" in z.installed()
    assert upstream.count(suffix(".rpm")) == 2
