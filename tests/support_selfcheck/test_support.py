"""Self-check of tests/support: real signed repositories, real clients, the test upstream.

No depot is involved: clients talk to :class:`Upstream` directly (or use it as their
HTTP proxy, which it also understands).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support import hoststate
from tests.support.clients import (
    AptClient,
    ClientError,
    DnfClient,
    ZypperClient,
)
from tests.support.keys import GpgKey, make_gpg_key
from tests.support.repos import (
    DebSpec,
    RpmSpec,
    build_apt_repo,
    build_rpm_repo,
    sha256_file,
)
from tests.support.upstream import Upstream, suffix

# Taken when this module is imported, i.e. before any test of the self-check runs.
HOST_STATE_AT_START = hoststate.snapshot()


def _get(up: Upstream, path: str, headers: dict[str, str] | None = None,
         method: str = "GET") -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", up.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, resp.headers, body
    finally:
        conn.close()


@pytest.fixture
def served_file(upstream: Upstream) -> Iterator[tuple[str, bytes]]:
    data = bytes(range(256)) * 400  # 102400 bytes
    (upstream.root / "files").mkdir()
    (upstream.root / "files" / "blob.bin").write_bytes(data)
    yield "/files/blob.bin", data


# ------------------------------------------------------------------------------------------
# keys


def test_gpg_key_signs_and_verifies(gpg_key: GpgKey, tmp_path: Path) -> None:
    assert len(gpg_key.fingerprint) == 40
    assert gpg_key.public_keyring.read_bytes()[:1] != b"-"  # binary keyring
    assert gpg_key.public_armored.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK")
    doc = tmp_path / "doc"
    doc.write_text("hello\n")
    gpg_key.clearsign(doc, tmp_path / "doc.inline")
    gpg_key.detach_sign(doc, tmp_path / "doc.asc")
    assert gpg_key.verify(tmp_path / "doc.inline")
    assert gpg_key.verify(tmp_path / "doc.asc", doc)
    doc.write_text("tampered\n")
    assert not gpg_key.verify(tmp_path / "doc.asc", doc)


def test_gpg_key_with_long_workdir_uses_short_home(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with make_gpg_key(deep, "long path") as key:
        assert len(str(key.homedir)) < 60
        doc = deep / "x"
        doc.write_text("x\n")
        key.detach_sign(doc, deep / "x.asc")
        assert key.verify(deep / "x.asc", doc)
    assert not key.homedir.exists()
    out = subprocess.run(["pgrep", "-f", f"gpg-agent --homedir {key.homedir}"],
                         capture_output=True, text=True, check=False).stdout
    assert out.strip() == ""


# ------------------------------------------------------------------------------------------
# repositories


def test_apt_repo_layout(gpg_key: GpgKey, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    repo = build_apt_repo(root, gpg_key, [
        DebSpec("alpha", "1.0"),
        DebSpec("libbeta1", "2:1.5-1", arch="amd64", depends="alpha"),
    ], codename="testing")
    dists = root / "dists" / "stable"
    for name in ("Release", "InRelease", "Release.gpg"):
        assert (dists / name).is_file()
    assert gpg_key.verify(dists / "InRelease")
    assert gpg_key.verify(dists / "Release.gpg", dists / "Release")
    release = (dists / "Release").read_text()
    for field in ("Origin:", "Label:", "Suite: stable", "Codename: testing", "Date:",
                  "Architectures: amd64", "Components: main", "Acquire-By-Hash: yes"):
        assert field in release
    packages = (dists / "main/binary-amd64/Packages").read_bytes()
    assert gzip.decompress((dists / "main/binary-amd64/Packages.gz").read_bytes()) == packages
    sha = hashlib.sha256(packages).hexdigest()
    assert (dists / "main/binary-amd64/by-hash/SHA256" / sha).read_bytes() == packages
    assert f"{sha}" in release
    by_name = {p.name: p for p in repo.packages}
    assert by_name["libbeta1"].path == "pool/main/libb/libbeta1/libbeta1_1.5-1_amd64.deb"
    assert by_name["alpha"].path == "pool/main/a/alpha/alpha_1.0_all.deb"
    for p in repo.packages:
        assert sha256_file(root / p.path) == p.sha256
        assert f"SHA256: {p.sha256}" in packages.decode()
    line = repo.sources_line("http://127.0.0.1:1")
    assert line == (f"deb [signed-by={gpg_key.public_keyring}] http://127.0.0.1:1/ "
                    "stable main")
    # republish: only the new list is indexed, the old file stays in the pool
    old_release_mtime = int((dists / "Release").stat().st_mtime)
    build_apt_repo(root, gpg_key, [DebSpec("alpha", "1.1")])
    text = (dists / "main/binary-amd64/Packages").read_text()
    assert "Version: 1.1" in text and "libbeta1" not in text and "Version: 1.0" not in text
    assert (root / "pool/main/a/alpha/alpha_1.0_all.deb").is_file()
    assert int((dists / "Release").stat().st_mtime) > old_release_mtime


def test_rpm_repo_layout(gpg_key: GpgKey, tmp_path: Path) -> None:
    root = tmp_path / "rpmrepo"
    repo = build_rpm_repo(root, gpg_key, [RpmSpec("gamma", "1.0"),
                                          RpmSpec("delta", "3.1", "2", requires=["gamma"]),
                                          RpmSpec("omega", "1", arch="x86_64")])
    repodata = root / "repodata"
    assert gpg_key.verify(repodata / "repomd.xml.asc", repodata / "repomd.xml")
    assert repodata.joinpath("repomd.xml.key").read_bytes() == (
        gpg_key.public_armored.read_bytes())
    assert {p.path for p in repo.packages} == {"Packages/gamma-1.0-1.noarch.rpm",
                                              "Packages/delta-3.1-2.noarch.rpm",
                                              "Packages/omega-1-1.x86_64.rpm"}
    for rel in repo.metadata_paths():
        assert (root / rel).is_file(), rel
    primary = next(repodata.glob("*-primary.xml.gz"))
    text = gzip.decompress(primary.read_bytes()).decode()
    assert 'packages="3"' in text and '<rpm:entry name="gamma"/>' in text
    assert "<arch>x86_64</arch>" in text
    for p in repo.packages:
        assert p.sha256 in text
    build_rpm_repo(root, gpg_key, [RpmSpec("gamma", "1.1")])
    primary = next(p for p in repodata.glob("*-primary.xml.gz"))
    text = gzip.decompress(primary.read_bytes()).decode()
    assert 'packages="1"' in text and 'ver="1.1"' in text
    repo_file = repo.repo_file("pd", "http://127.0.0.1:1", proxy="http://127.0.0.1:2")
    assert "repo_gpgcheck=1" in repo_file and "gpgcheck=0" in repo_file
    assert f"gpgkey=file://{gpg_key.public_armored}" in repo_file
    assert "proxy=http://127.0.0.1:2" in repo_file and "metadata_expire=0" in repo_file


def test_many_packages_build_fast(gpg_key: GpgKey, tmp_path: Path) -> None:
    t0 = time.monotonic()
    repo = build_apt_repo(tmp_path / "apt", gpg_key,
                          [DebSpec(f"many{i}", "1.0") for i in range(200)])
    t_apt = time.monotonic() - t0
    t0 = time.monotonic()
    rrepo = build_rpm_repo(tmp_path / "rpm", gpg_key,
                           [RpmSpec(f"many{i}", "1.0") for i in range(200)])
    t_rpm = time.monotonic() - t0
    assert len(repo.packages) == 200 and len(rrepo.packages) == 200
    # Republishing reuses the built packages.
    t0 = time.monotonic()
    build_apt_repo(tmp_path / "apt", gpg_key, [DebSpec(f"many{i}", "1.0") for i in range(200)])
    t_again = time.monotonic() - t0
    print(f"200 debs: {t_apt:.1f}s, 200 rpms: {t_rpm:.1f}s, republish: {t_again:.1f}s")
    assert t_apt < 20 and t_rpm < 20 and t_again < 5


def test_padding_makes_big_packages(gpg_key: GpgKey, tmp_path: Path) -> None:
    repo = build_apt_repo(tmp_path / "apt", gpg_key,
                          [DebSpec("big", "1.0", size_padding=3 * 1024 * 1024)])
    assert repo.file("big").stat().st_size > 3 * 1024 * 1024


# ------------------------------------------------------------------------------------------
# upstream


def test_upstream_serves_files_with_validators(upstream: Upstream,
                                               served_file: tuple[str, bytes]) -> None:
    path, data = served_file
    status, headers, body = _get(upstream, path)
    assert status == 200 and body == data
    assert headers["Content-Length"] == str(len(data))
    etag, lm = headers["ETag"], headers["Last-Modified"]
    assert etag and lm
    status, headers, body = _get(upstream, path, method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(data))
    assert _get(upstream, path, {"If-None-Match": etag})[0] == 304
    assert _get(upstream, path, {"If-None-Match": '"other"'})[0] == 200
    assert _get(upstream, path, {"If-Modified-Since": lm})[0] == 304
    assert _get(upstream, path, {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})[0] == 200
    status, headers, body = _get(upstream, path, {"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    status, _, body = _get(upstream, path, {"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, _, body = _get(upstream, path, {"Range": "bytes=100-", "If-Range": '"stale"'})
    assert status == 200 and body == data
    assert _get(upstream, path, {"Range": f"bytes={len(data)}-"})[0] == 416
    assert _get(upstream, "/files/missing")[0] == 404
    assert _get(upstream, "/files")[0] == 404
    assert _get(upstream, "/../../../etc/passwd")[0] == 404
    assert _get(upstream, "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd")[0] == 404
    (upstream.root / "files" / "escape").symlink_to("/etc/passwd")
    assert _get(upstream, "/files/escape")[0] == 404
    # log
    assert upstream.count(path) == 9
    assert upstream.count(path, method="HEAD") == 1
    assert upstream.count(path, status=304) == 2
    assert upstream.count(path, status=206) == 2
    assert upstream.count(method=None) == 15
    assert upstream.bytes_sent(path) == 4 * len(data) + 100 + 10 + len(b"range not satisfiable\n")
    assert upstream.paths()[0] == path
    rec = upstream.log[0]
    assert rec.method == "GET" and rec.status == 200 and rec.bytes_sent == len(data)
    assert rec.header("host") == f"127.0.0.1:{upstream.port}" and rec.time > 0
    upstream.clear_log()
    assert upstream.log == []


def test_upstream_keep_alive_and_absolute_form(upstream: Upstream,
                                               served_file: tuple[str, bytes]) -> None:
    path, data = served_file
    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=10)
    conn.request("GET", path)
    r1 = conn.getresponse()
    assert r1.read() == data
    sock = conn.sock
    conn.request("GET", f"http://repo.invalid{path}")  # as a client talking to a proxy
    r2 = conn.getresponse()
    assert r2.read() == data and conn.sock is sock
    conn.close()
    assert upstream.log[1].target == f"http://repo.invalid{path}"
    assert upstream.log[1].path == path


def test_upstream_faults(upstream: Upstream, served_file: tuple[str, bytes]) -> None:
    path, data = served_file
    upstream.corrupt(path)
    status, headers, body = _get(upstream, path)
    assert status == 200 and len(body) == len(data) and body != data
    status, _, body = _get(upstream, path, {"Range": "bytes=0-9"})
    assert status == 206 and len(body) == 10 and body != data[:10]
    upstream.clear_faults()
    assert _get(upstream, path)[2] == data

    upstream.cut(path, after=1000)
    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.headers["Content-Length"] == str(len(data))
    with pytest.raises(http.client.IncompleteRead) as exc:
        resp.read()
    assert len(exc.value.partial) == 1000
    conn.close()
    assert upstream.log[-1].aborted and upstream.log[-1].bytes_sent == 1000
    upstream.clear_faults()

    upstream.status(suffix(".bin"), 503, times=1)
    assert _get(upstream, path)[0] == 503
    assert _get(upstream, path)[0] == 200  # only once
    upstream.redirect(path, "http://127.0.0.1:1/elsewhere")
    status, headers, _ = _get(upstream, path)
    assert status == 302 and headers["Location"] == "http://127.0.0.1:1/elsewhere"
    upstream.clear_faults()

    upstream.stall(path, 0.5)
    t0 = time.monotonic()
    assert _get(upstream, path)[2] == data
    assert time.monotonic() - t0 >= 0.45
    upstream.clear_faults()

    upstream.slow(path, len(data) / 0.5)  # about 0.5 s
    t0 = time.monotonic()
    assert _get(upstream, path)[2] == data
    assert 0.4 <= time.monotonic() - t0 < 3
    upstream.clear_faults()

    upstream.set_throttle(len(data) / 0.4)
    t0 = time.monotonic()
    assert _get(upstream, path)[2] == data
    assert 0.3 <= time.monotonic() - t0 < 3
    upstream.set_throttle(None)
    t0 = time.monotonic()
    assert _get(upstream, path)[2] == data
    assert time.monotonic() - t0 < 0.3
    upstream.throttle_for(path, 0.3)
    t0 = time.monotonic()
    assert _get(upstream, path)[2] == data
    assert 0.25 <= time.monotonic() - t0 < 3


def test_upstream_stop_closes_connections_and_restarts(upstream: Upstream,
                                                       served_file: tuple[str, bytes]) -> None:
    path, data = served_file
    port = upstream.port
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)  # an idle keep-alive
    upstream.stall(path, 30)
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            _get(upstream, path)
        except (OSError, http.client.HTTPException) as e:
            errors.append(e)

    t = threading.Thread(target=fetch)
    t.start()
    time.sleep(0.3)  # the request is now stalled inside the server
    t0 = time.monotonic()
    upstream.stop()
    t.join(5)
    assert not t.is_alive() and errors, "stalled request was not cut by stop()"
    assert time.monotonic() - t0 < 5
    assert idle.recv(1) == b""  # idle connection closed too
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    upstream.clear_faults()
    upstream.start()
    assert upstream.port == port
    assert _get(upstream, path)[2] == data


# ------------------------------------------------------------------------------------------
# apt


@pytest.mark.clients
def test_apt_update_install_republish(gpg_key: GpgKey, upstream: Upstream,
                                      apt_client: AptClient,
                                      host_state_guard: hoststate.HostState) -> None:
    specs = [
        DebSpec("pd-base", "1.0", files={"usr/share/pd-base/data": b"base 1.0\n"}),
        DebSpec("pd-app", "1.0", depends="pd-base (>= 1.0)",
                files={"usr/bin/pd-app": b"#!/bin/sh\necho app\n"}),
        DebSpec("pd-extra", "0.5", arch="amd64"),
    ]
    repo = build_apt_repo(upstream.root, gpg_key, specs)
    apt_client.set_sources([repo.sources_line(upstream.url)])
    apt_client.update()
    assert upstream.count("/dists/stable/InRelease") == 1
    assert upstream.count(lambda p: "/by-hash/SHA512/" in p) == 1  # apt: strongest hash
    apt_client.install(["pd-app"])
    assert apt_client.installed() == {"pd-app": "1.0", "pd-base": "1.0"}
    assert (apt_client.root / "usr/bin/pd-app").read_bytes() == b"#!/bin/sh\necho app\n"
    assert (apt_client.root / "usr/share/pd-base/data").read_text() == "base 1.0\n"
    assert upstream.count("/" + repo.package("pd-app").path) == 1

    # republish with a newer pd-app; the old one stays in the pool
    specs[1] = DebSpec("pd-app", "2.0", depends="pd-base (>= 1.0)",
                       files={"usr/bin/pd-app": b"#!/bin/sh\necho app 2\n"})
    repo = build_apt_repo(upstream.root, gpg_key, specs)
    apt_client.update()
    assert upstream.records("/dists/stable/InRelease")[-1].status == 200
    assert apt_client.candidate("pd-app") == "2.0"
    apt_client.update()  # nothing changed: apt revalidates and gets 304
    assert upstream.records("/dists/stable/InRelease")[-1].status == 304
    apt_client.install(["pd-app", "pd-extra"])
    assert apt_client.installed() == {"pd-app": "2.0", "pd-base": "1.0", "pd-extra": "0.5"}
    assert (apt_client.root / "usr/bin/pd-app").read_bytes() == b"#!/bin/sh\necho app 2\n"
    # dpkg itself agrees, looking at the private root only
    out = subprocess.run(["dpkg", "--root", str(apt_client.root), "-l", "pd-app"],
                         capture_output=True, text=True, check=True).stdout
    assert "ii  pd-app" in out and "2.0" in out

    dl = apt_client.download(["pd-base"])
    assert [p.name for p in dl.paths] == ["pd-base_1.0_all.deb"]
    assert sha256_file(dl.paths[0]) == repo.package("pd-base").sha256


@pytest.mark.clients
def test_apt_rejects_wrong_key_and_uses_proxy(gpg_key: GpgKey, other_gpg_key: GpgKey,
                                              upstream: Upstream, apt_client: AptClient) -> None:
    repo = build_apt_repo(upstream.root, gpg_key, [DebSpec("pd-one", "1.0")])
    apt_client.set_sources([repo.sources_line(upstream.url,
                                              signed_by=other_gpg_key.public_keyring)])
    result = apt_client.update(check=False)
    assert not result.ok and "NO_PUBKEY" in result.output
    with pytest.raises(ClientError) as exc:
        apt_client.update()
    assert "NO_PUBKEY" in str(exc.value)

    # The upstream also answers proxy-style requests: a stand-in for the depot.
    apt_client.set_sources([repo.sources_line("http://repo.invalid")])
    apt_client.set_proxy(upstream.url)
    upstream.clear_log()
    apt_client.update()
    assert upstream.log[0].target == "http://repo.invalid/dists/stable/InRelease"
    apt_client.install(["pd-one"])
    assert apt_client.installed() == {"pd-one": "1.0"}


@pytest.mark.clients
def test_apt_valid_until_multiarch_and_options(gpg_key: GpgKey, upstream: Upstream,
                                                apt_client: AptClient) -> None:
    repo = build_apt_repo(
        upstream.root, gpg_key,
        [DebSpec("pd-any", "1.0"), DebSpec("pd-arm", "1.0", arch="arm64"),
         DebSpec("pd-x86", "1.0", arch="amd64")],
        archs=("amd64", "arm64"),
        date=datetime(2020, 1, 1, tzinfo=UTC), valid_until=datetime(2020, 1, 8, tzinfo=UTC),
    )
    arm = (upstream.root / "dists/stable/main/binary-arm64/Packages").read_text()
    assert "pd-arm" in arm and "pd-any" in arm and "pd-x86" not in arm
    assert "Valid-Until: Wed, 08 Jan 2020 00:00:00 UTC" in (
        upstream.root / "dists/stable/Release").read_text()
    apt_client.set_sources([repo.sources_line(upstream.url)])
    result = apt_client.update(check=False)
    assert not result.ok and "expired" in result.output
    apt_client.extra_options = ["-o", "Acquire::Check-Valid-Until=false"]
    apt_client.update()
    assert apt_client.candidate("pd-x86") == "1.0" and apt_client.candidate("pd-arm") is None
    apt_client.extra_options = []
    apt_client.set_option("Acquire::Check-Valid-Until", "false")
    apt_client.update()


# ------------------------------------------------------------------------------------------
# dnf


@pytest.mark.clients
def test_dnf_makecache_install_upgrade(gpg_key: GpgKey, upstream: Upstream,
                                       dnf_client: DnfClient,
                                       host_state_guard: hoststate.HostState) -> None:
    specs = [RpmSpec("pd-lib", "1.0", files={"usr/share/pd-lib/data": b"lib 1.0\n"}),
             RpmSpec("pd-tool", "1.0", requires=["pd-lib >= 1.0"]),
             RpmSpec("pd-other", "0.1")]
    repo = build_rpm_repo(upstream.root, gpg_key, specs)
    dnf_client.add_repo(repo.repo_file("pdtest", upstream.url))
    dnf_client.makecache()
    assert upstream.count("/repodata/repomd.xml") >= 1
    assert upstream.count("/repodata/repomd.xml.asc") >= 1
    dnf_client.install(["pd-tool"])
    assert dnf_client.installed() == {"pd-lib": "1.0-1", "pd-tool": "1.0-1"}
    assert (dnf_client.root / "usr/share/pd-lib/data").read_text() == "lib 1.0\n"
    assert (dnf_client.root / "var/lib/rpm").is_dir()

    specs[1] = RpmSpec("pd-tool", "1.1", requires=["pd-lib >= 1.0"])
    repo = build_rpm_repo(upstream.root, gpg_key, specs)
    up = dnf_client.upgrade()
    assert dnf_client.installed()["pd-tool"] == "1.1-1", up.describe() + repr(upstream.log)

    dl = dnf_client.download(["pd-other"])
    assert [p.name for p in dl.paths] == ["pd-other-0.1-1.noarch.rpm"]
    assert sha256_file(dl.paths[0]) == repo.package("pd-other").sha256
    assert "pd-other" not in dnf_client.installed()
    assert not _agents_under(dnf_client.root), "gpg-agent outlived dnf"


def _agents_under(root: Path) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "gpg-agent" in text and str(root) in text:
            found.append(text)
    return found


@pytest.mark.clients
def test_dnf_rejects_wrong_key_and_uses_proxy(gpg_key: GpgKey, other_gpg_key: GpgKey,
                                              upstream: Upstream, dnf_client: DnfClient) -> None:
    repo = build_rpm_repo(upstream.root, gpg_key, [RpmSpec("pd-one", "1.0")])
    text = repo.repo_file("pdbad", upstream.url).replace(
        str(gpg_key.public_armored), str(other_gpg_key.public_armored))
    dnf_client.add_repo(text)
    result = dnf_client.makecache(check=False)
    assert not result.ok, result.describe()
    dnf_client.clear_repos()
    dnf_client.clean()

    dnf_client.add_repo(repo.repo_file("pdproxy", "http://repo.invalid/"))
    dnf_client.set_proxy(upstream.url)
    upstream.clear_log()
    dnf_client.install(["pd-one"])
    assert dnf_client.installed() == {"pd-one": "1.0-1"}
    assert all(r.target.startswith("http://repo.invalid/") for r in upstream.log)
    assert not _agents_under(dnf_client.root)


# ------------------------------------------------------------------------------------------
# zypper


@pytest.mark.clients
def test_zypper_refresh_install(gpg_key: GpgKey, upstream: Upstream,
                                zypper_client: ZypperClient,
                                host_state_guard: hoststate.HostState) -> None:
    specs = [RpmSpec("pd-zlib", "1.0"),
             RpmSpec("pd-ztool", "2.0", requires=["pd-zlib"],
                     files={"usr/bin/pd-ztool": b"#!/bin/sh\n"})]
    repo = build_rpm_repo(upstream.root, gpg_key, specs)
    zypper_client.add_repo(upstream.url, "pdtest")
    zypper_client.refresh()
    assert upstream.count("/repodata/repomd.xml.asc") >= 1
    zypper_client.install(["pd-ztool"])
    assert zypper_client.installed() == {"pd-zlib": "1.0-1", "pd-ztool": "2.0-1"}
    assert (zypper_client.root / "usr/bin/pd-ztool").read_bytes() == b"#!/bin/sh\n"

    specs.append(RpmSpec("pd-zextra", "0.3"))
    repo = build_rpm_repo(upstream.root, gpg_key, specs)
    dl = zypper_client.install(["pd-zextra"], download_only=True)
    assert [p.name for p in dl.paths] == ["pd-zextra-0.3-1.noarch.rpm"]
    assert sha256_file(dl.paths[0]) == repo.package("pd-zextra").sha256
    assert "pd-zextra" not in zypper_client.installed()


@pytest.mark.clients
def test_zypper_rejects_bad_signature_and_uses_proxy(gpg_key: GpgKey, other_gpg_key: GpgKey,
                                                     upstream: Upstream,
                                                     zypper_client: ZypperClient) -> None:
    repo = build_rpm_repo(upstream.root, gpg_key, [RpmSpec("pd-zone", "1.0")])
    # Trust only the other key and serve a signature the trusted key did not make.
    zypper_client.import_key(other_gpg_key.public_armored)
    upstream.corrupt("/repodata/repomd.xml.asc")
    zypper_client.add_repo(upstream.url, "pdbad")
    result = zypper_client.refresh(check=False)
    assert not result.ok, result.describe()
    upstream.clear_faults()
    zypper_client.remove_repo("pdbad")

    zypper_client.set_proxy(upstream.url)
    zypper_client.add_repo("http://repo.invalid/", "pdproxy")
    upstream.clear_log()
    zypper_client.install(["pd-zone"])
    assert zypper_client.installed() == {"pd-zone": "1.0-1"}
    assert upstream.log and all(r.target.startswith("http://repo.invalid/")
                                for r in upstream.log)
    assert repo.package("pd-zone").path in "".join(r.target for r in upstream.log)


# ------------------------------------------------------------------------------------------


def test_zz_host_state_unchanged() -> None:
    """Runs last in this module: nothing above touched the host's package state."""
    changed = hoststate.diff(HOST_STATE_AT_START, hoststate.snapshot())
    assert not changed, "\n".join(changed)
