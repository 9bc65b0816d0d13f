"""Mirrors: synced from signed metadata, published atomically, served while
the upstream is down, resumable, refusing a bad signature."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.depot import ROOT, DepotProcess
from tests.support.clients import AptClient, DnfClient
from tests.support.keys import GpgKey
from tests.support.repos import DebSpec, RpmSpec, SourceSpec, build_apt_repo, build_rpm_repo
from tests.support.upstream import Upstream, suffix

DEBS = [DebSpec(f"pkg{i}", "1.0", files={f"usr/share/doc/pkg{i}.txt": b"x\n"},
                size_padding=5000) for i in range(12)]
DEBS.append(DebSpec("hello", "1.0", depends="pkg1", files={"usr/share/hello": b"1\n"}))


def apt_mirror(name: str, upstream: Upstream, key: Path, **keys: object) -> str:
    """The config of a mirror NAME of the upstream's apt repository (suite
    stable, main, amd64); `keys`: more of its mirror keys, as TOML values."""
    table = {"suites": ["stable"], "components": ["main"], "architectures": ["amd64"], **keys}
    return (f'\n[repos.{name}]\nupstreams = ["{upstream.url}/debian"]\nkeyring = "{key}"\n'
            f"[repos.{name}.mirror]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                                for k, v in table.items()))


def config(upstream: Upstream, key: Path, **deb_keys: object) -> str:
    return apt_mirror("deb", upstream, key, **deb_keys) + f"""
[repos.rpms]
upstreams = ["{upstream.url}/rpms"]
keyring = "{key}"
[repos.rpms.mirror]
format = "rpm"
"""


@pytest.fixture
def depot(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> Iterator[DepotProcess]:
    with DepotProcess(tmp_path / "depot", config(upstream, gpg_key.public_armored)) as d:
        yield d


def sync(depot: DepotProcess, *names: str, ok: bool = True,
         env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "pkgdepot", "mirror", "sync", *names,
                           "--data-dir", str(depot.data_dir), "--config",
                           str(depot.config_path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, **(env or {})})
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def apt(tmp_path: Path, name: str, line: str) -> AptClient:
    c = AptClient(tmp_path / name)
    c.set_sources([line])
    return c


def test_relative_paths(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> None:
    """`--data-dir NAME` and a binary keyring given by a relative path in the
    config, both taken from the current directory: the signature check (gpgv
    runs in a directory of its own, and was handed relative keyring paths:
    "No public key") and the second sync, which looks into the catalog
    before it starts, both work."""
    build_apt_repo(upstream.root / "debian", gpg_key, DEBS)
    work = tmp_path / "work"
    work.mkdir()
    keyring = os.path.relpath(gpg_key.public_keyring, work)
    (work / "p.toml").write_text(config(upstream, Path(keyring)))
    outs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "pkgdepot", "mirror", "sync", "deb",
             "--data-dir", "data", "--config", "p.toml"],
            capture_output=True, text=True, cwd=work, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outs.append(proc.stdout)
    assert "published snapshot" in outs[0] and "13 packages" in outs[0]
    assert "upstream unchanged, nothing to do" in outs[1], outs[1]
    assert upstream.count(suffix(".deb")) == 13
    assert (work / "data" / "catalog.sqlite").is_file()


def test_apt_mirror_serves_with_upstream_down_and_keeps_old_state(
        tmp_path: Path, upstream: Upstream, gpg_key: GpgKey, depot: DepotProcess) -> None:
    repo = build_apt_repo(upstream.root / "debian", gpg_key, DEBS)
    status, _h, body = depot.get("/deb/dists/stable/InRelease")
    assert status == 404 and b"mirror sync deb" in body  # not synced yet: says what to do
    out = sync(depot, "deb")
    assert "published snapshot" in out and "13 packages" in out
    assert upstream.count(suffix(".deb")) == 13
    upstream.stop()
    c = apt(tmp_path, "c1", repo.sources_line(f"{depot.url}/deb"))
    c.update()
    c.install(["hello"])
    assert c.installed() == {"hello": "1.0", "pkg1": "1.0"}
    # upstream publishes; the mirror serves the old state until a sync completes
    upstream.start()
    time.sleep(1.1)
    build_apt_repo(upstream.root / "debian", gpg_key,
                   [*DEBS[:-1], DebSpec("hello", "2.0", depends="pkg1",
                                        files={"usr/share/hello": b"2\n"})])
    c.update()
    assert c.candidate("hello") == "1.0"
    upstream.clear_log()
    out = sync(depot, "deb")
    assert "12 already in the store" in out
    assert upstream.count(suffix(".deb")) == 1  # only what changed
    c.update()
    c.install(["hello"])
    assert c.installed()["hello"] == "2.0"
    # nothing new upstream: a quick no-op, no new state
    t0 = time.monotonic()
    out = sync(depot, "deb")
    assert "upstream unchanged" in out and time.monotonic() - t0 < 10
    assert depot.get("/snapshot/deb/")[2].decode().count("\n") == 2


def _tls_server(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 with a new self-signed certificate, and
    the certificate (what a client that trusts the server is given)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert


def test_https_upstream_is_verified(tmp_path: Path, gpg_key: GpgKey) -> None:
    """An https upstream: the sync (its own process, and its helper) and the
    server fetch over TLS, trusting what OpenSSL trusts (here SSL_CERT_FILE,
    as an operator with a private CA would set it). Without that trust,
    nothing is published and a client gets a 502 that names the certificate."""
    context, cert = _tls_server(tmp_path)
    with Upstream(tmp_path / "www", tls=context) as up:
        assert up.url.startswith("https://127.0.0.1:")
        repo = build_apt_repo(up.root / "debian", gpg_key, DEBS)
        cfg = config(up, gpg_key.public_armored).replace(
            'architectures = ["amd64"]\n', 'architectures = ["amd64"]\nprocesses = 2\n', 1) \
            + f'[repos.cached]\nupstreams = ["{up.url}/debian"]\n'  # a cache, not a mirror
        untrusted = DepotProcess(tmp_path / "depot", cfg, env={"SSL_CERT_FILE": os.devnull})
        out = sync(untrusted, "deb", ok=False, env=untrusted.env)
        assert "certificate verify failed" in out and "nothing published" in out, out
        with untrusted:
            status, _h, body = untrusted.get("/cached/pool/main/p/pkg1/pkg1_1.0_all.deb")
            assert status == 502 and b"certificate verify failed" in body, body
        assert up.count(suffix(".deb")) == 0  # refused at the handshake
        trusted = DepotProcess(tmp_path / "depot", cfg, env={"SSL_CERT_FILE": str(cert)})
        out = sync(trusted, "deb", env=trusted.env)
        assert "published snapshot" in out and "(" in out and "by a second process" in out, out
        with trusted:
            c = apt(tmp_path, "c1", repo.sources_line(f"{trusted.url}/deb"))
            c.update()
            c.install(["hello"])
            assert c.installed() == {"hello": "1.0", "pkg1": "1.0"}
            status, _h, body = trusted.get("/snapshot/deb/latest/dists/stable/InRelease")
            assert status == 200
            assert body == (up.root / "debian/dists/stable/InRelease").read_bytes()
            deb = up.root / "debian" / repo.package("pkg1").path
            status, _h, body = trusted.get("/cached/" + repo.package("pkg1").path)
            assert status == 200 and body == deb.read_bytes()


def test_bad_signature_publishes_nothing(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey,
                                         other_gpg_key: GpgKey, depot: DepotProcess) -> None:
    build_apt_repo(upstream.root / "debian", gpg_key, DEBS)
    sync(depot, "deb")
    before = depot.get("/deb/dists/stable/InRelease")[2]
    time.sleep(1.1)
    build_apt_repo(upstream.root / "debian", other_gpg_key, DEBS[:3])  # signed by a stranger
    out = sync(depot, "deb", ok=False)
    assert "signature check" in out and "nothing published" in out
    assert depot.get("/deb/dists/stable/InRelease")[2] == before
    assert depot.get("/snapshot/deb/")[2].decode().count("\n") == 1


def test_mirror_keeps_index_forms_clients_ask_for(tmp_path: Path, upstream: Upstream,
                                                   gpg_key: GpgKey) -> None:
    """By default a mirror fetches each package index as xz (what apt asks
    for first) and gz (what the sync reads, four times as fast), and makes the
    plain one: all three are served, each under its by-hash name too, with
    the upstream's bytes, while the upstream is down. With
    `index_compressions = ["xz"]` the gz is never fetched and is not served."""
    repo = build_apt_repo(upstream.root / "debian", gpg_key, DEBS)
    key = gpg_key.public_armored
    with DepotProcess(tmp_path / "depot", config(upstream, key)
                      + apt_mirror("xzonly", upstream, key, index_compressions=["xz"])) as depot:
        sync(depot, "deb", "xzonly")
        upstream.stop()
        lists = repo.dists / "main" / "binary-amd64"
        forms = {name: (lists / name).read_bytes()
                 for name in ("Packages", "Packages.gz", "Packages.xz")}
        for name, body in forms.items():
            by_hash = f"by-hash/SHA256/{hashlib.sha256(body).hexdigest()}"
            for path in (name, by_hash):
                url = f"/deb/dists/stable/main/binary-amd64/{path}"
                assert depot.get(url)[::2] == (200, body), url
                status, _h, got = depot.get(f"/xzonly/dists/stable/main/binary-amd64/{path}")
                if name == "Packages.gz":
                    assert status == 404, url
                    # fetched once, by the default mirror only
                    assert upstream.count(suffix(by_hash)) == 1
                else:
                    assert (status, got) == (200, body), url
        for name in ("deb", "xzonly"):
            c = apt(tmp_path, f"c-{name}", repo.sources_line(f"{depot.url}/{name}"))
            c.update()
            c.install(["hello"])
            assert c.installed() == {"hello": "1.0", "pkg1": "1.0"}


def test_mirror_with_sources_and_udebs(tmp_path: Path, upstream: Upstream,
                                       gpg_key: GpgKey) -> None:
    """`sources = true` and `udebs = true`: the sync also fetches, once each and
    verified, the files of every source package that Sources lists and the
    udebs of debian-installer. With the upstream down, `apt-get source
    --download-only` gets a source package from the mirror (apt checks each
    file against the Sources it read there), and the udeb is served as the
    upstream has it."""
    repo = build_apt_repo(upstream.root / "debian", gpg_key, DEBS,
                          sources=[SourceSpec("hello", "1.0")],
                          udebs=[DebSpec("hello-udeb", "1.0")])
    cfg = config(upstream, gpg_key.public_armored, sources=True, udebs=True)
    extra = [*repo.source_files, *(u.path for u in repo.udebs)]
    assert len(extra) == 3
    with DepotProcess(tmp_path / "depot", cfg) as depot:
        out = sync(depot, "deb")
        assert "published snapshot" in out and "16 packages" in out, out
        for path in extra:
            assert upstream.count(suffix("/debian/" + path)) == 1, path
        upstream.stop()
        for path in extra:
            status, _h, body = depot.get(f"/deb/{path}")
            assert (status, body) == (200, (repo.root / path).read_bytes()), path
        line = repo.sources_line(f"{depot.url}/deb")
        c = apt(tmp_path, "c", line)
        c.set_sources([line, "deb-src" + line[len("deb"):]])
        c.update()
        dest = tmp_path / "source"
        dest.mkdir()
        c.run(["apt-get", "source", "--download-only", "hello"], cwd=dest)
        got = {p.name: p.read_bytes() for p in dest.iterdir()}
        assert got == {path.rsplit("/", 1)[1]: (repo.root / path).read_bytes()
                       for path in repo.source_files}


def test_interrupted_sync_resumes(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey,
                                  depot: DepotProcess) -> None:
    repo = build_apt_repo(upstream.root / "debian", gpg_key, DEBS)
    upstream.cut(suffix("/pkg7_1.0_all.deb"), after=100)  # the network fails on one package
    out = sync(depot, "deb", ok=False)
    assert "nothing published" in out and "run the sync again" in out
    assert depot.get("/deb/dists/stable/InRelease")[0] == 404
    fetched = {r.path for r in upstream.records(suffix(".deb"), status=200) if not r.aborted}
    upstream.clear_faults()
    upstream.clear_log()
    sync(depot, "deb")
    again = {r.path for r in upstream.records(suffix(".deb"))}
    assert again == {"/debian/" + p.path for p in repo.packages} - fetched
    assert "/debian/" + repo.package("pkg7").path in again


def test_sync_shares_downloads_with_a_second_process(tmp_path: Path, upstream: Upstream,
                                                     gpg_key: GpgKey) -> None:
    """`processes = 2`: a helper process downloads, verifies and places a share
    of the files. Failures on either side are counted and publish nothing;
    the next sync fetches only what is missing, and apt installs from it."""
    cfg = config(upstream, gpg_key.public_armored).replace(
        'architectures = ["amd64"]\n',
        'architectures = ["amd64"]\nprocesses = 2\nconcurrency = 2\n', 1)
    with DepotProcess(tmp_path / "depot", cfg) as depot:
        repo = build_apt_repo(upstream.root / "debian", gpg_key, DEBS)
        cut = [f"pkg{i}" for i in range(3, 7)]  # adjacent: both processes have some
        for name in cut:
            upstream.cut(suffix(f"/{name}_1.0_all.deb"), after=100)
        out = sync(depot, "deb", ok=False)
        assert "4 of 13 packages failed" in out and "nothing published" in out, out
        assert depot.get("/deb/dists/stable/InRelease")[0] == 404
        upstream.clear_faults()
        upstream.clear_log()
        for name in cut:  # the sync's one worker is still on its first when the helper starts
            upstream.stall(suffix(f"/{name}_1.0_all.deb"), 1.0)
        out = sync(depot, "deb")
        assert "published snapshot" in out and "9 already in the store" in out, out
        assert "4 files" in out and "(3 by a second process)" in out, out
        assert {r.path for r in upstream.records(suffix(".deb"))} == {
            "/debian/" + repo.package(name).path for name in cut}
        c = apt(tmp_path, "c1", repo.sources_line(f"{depot.url}/deb"))
        c.update()
        c.install(["hello", *cut])
        assert c.installed() == {"hello": "1.0", "pkg1": "1.0", **dict.fromkeys(cut, "1.0")}


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_sync_survives_its_helper_process_dying(tmp_path: Path, upstream: Upstream,
                                                gpg_key: GpgKey) -> None:
    """The helper process is killed (SIGKILL) while it has files in hand: the
    sync fetches them itself and publishes a complete state."""
    cfg = config(upstream, gpg_key.public_armored).replace(
        'architectures = ["amd64"]\n',
        'architectures = ["amd64"]\nprocesses = 2\nconcurrency = 2\n', 1)
    with DepotProcess(tmp_path / "depot", cfg) as depot:
        repo = build_apt_repo(upstream.root / "debian", gpg_key, DEBS)
        upstream.slow(suffix(".deb"), bytes_per_second=20_000)  # ~0.3 s a package
        proc = subprocess.Popen([sys.executable, "-m", "pkgdepot", "mirror", "sync", "deb",
                                 "--data-dir", str(depot.data_dir), "--config",
                                 str(depot.config_path)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while not (helpers := _children(proc.pid)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert helpers, "no helper process appeared"
            # two packages in the middle of their bodies at once: the sync's one
            # worker, and the helper (the upstream may still hold a small one
            # whose last bytes the sync already has: it does not count)
            sizes = {"/debian/" + p.path: (upstream.root / "debian" / p.path).stat().st_size
                     for p in repo.packages}
            assert upstream.wait_for(lambda log: sum(
                1 for r in log if r.path in sizes and not r.done
                and r.bytes_sent < sizes[r.path]) >= 2, timeout=60)
            for pid in helpers:  # the sync's own child, started by this test's sync
                os.kill(pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, out
        assert "download helper process stopped" in out and "published snapshot" in out, out
        for p in repo.packages:  # the published state is complete
            status, _h, body = depot.get(f"/deb/{p.path}")
            assert status == 200 and hashlib.sha256(body).hexdigest() == p.sha256


def test_rpm_mirror_with_dnf(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey,
                             depot: DepotProcess) -> None:
    repo = build_rpm_repo(upstream.root / "rpms", gpg_key,
                          [RpmSpec("greet", "1.0", requires=["libgreet"],
                                   files={"/usr/share/greet": b"hi\n"}),
                           RpmSpec("libgreet", "1.0", files={"/usr/share/libgreet": b"l\n"})])
    out = sync(depot, "rpms")
    assert "published snapshot" in out and "2 packages" in out
    upstream.stop()
    c = DnfClient(tmp_path / "dnf")
    c.add_repo(repo.repo_file("mirror", f"{depot.url}/rpms"))
    c.install(["greet"])
    assert "greet" in c.installed()


def test_filtered_apt_mirror_signed_by_the_depot(tmp_path: Path, upstream: Upstream,
                                                 gpg_key: GpgKey) -> None:
    build_apt_repo(upstream.root / "debian", gpg_key, DEBS)
    cfg = config(upstream, gpg_key.public_armored).replace(
        'architectures = ["amd64"]\n', 'architectures = ["amd64"]\nfilter = ["hell*"]\n', 1)
    cfg = '[server]\npublic_url = "http://depot.example:3142"\n' + cfg
    with DepotProcess(tmp_path / "depot", cfg) as depot:
        out = sync(depot, "deb")
        release = depot.get("/deb/dists/stable/Release")[2].decode()
        assert "Snapshots: http://depot.example:3142/snapshot/deb/@SNAPSHOTID@/" in release
        assert "2 packages" in out  # hello and what it depends on (pkg1)
        assert upstream.count(suffix(".deb")) == 2
        key = subprocess.run([sys.executable, "-m", "pkgdepot", "signing-key", "--data-dir",
                              str(depot.data_dir)], capture_output=True, cwd=ROOT, check=True,
                             timeout=60).stdout
        assert key.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
        keyfile = tmp_path / "depot.asc"
        keyfile.write_bytes(key)
        c = apt(tmp_path, "c", f"deb [signed-by={keyfile}] {depot.url}/deb stable main")
        c.update()
        c.install(["hello"])
        assert c.installed() == {"hello": "1.0", "pkg1": "1.0"}
        assert not c.install(["pkg5"], check=False).ok  # filtered out
        # the same filter and the same upstream: nothing to do
        assert "upstream unchanged" in sync(depot, "deb")


def test_rpm_mirror_keeps_newest_versions(tmp_path: Path, upstream: Upstream,
                                          gpg_key: GpgKey) -> None:
    specs = [RpmSpec("greet", v, files={"/usr/share/greet": v.encode()}) for v in
             ("1.0", "1.1", "2.0")]
    build_rpm_repo(upstream.root / "rpms", gpg_key, specs)
    cfg = config(upstream, gpg_key.public_armored) + "keep_versions = 2\n"
    with DepotProcess(tmp_path / "depot", cfg) as depot:
        out = sync(depot, "rpms")
        assert "2 packages" in out
        assert upstream.count(suffix("greet-1.0-1.noarch.rpm")) == 0
        key = tmp_path / "depot.asc"
        key.write_bytes(subprocess.run(
            [sys.executable, "-m", "pkgdepot", "signing-key", "--data-dir", str(depot.data_dir)],
            capture_output=True, cwd=ROOT, check=True, timeout=60).stdout)
        c = DnfClient(tmp_path / "dnf")
        c.add_repo(f"[m]\nname=m\nbaseurl={depot.url}/rpms/\nrepo_gpgcheck=1\ngpgcheck=0\n"
                   f"gpgkey=file://{key}\nmetadata_expire=0\n")
        c.install(["greet"])
        assert c.installed()["greet"] == "2.0-1"
        versions = c.run(["list", "--showduplicates", "greet"], check=False).stdout
        assert "1.1-1" in versions and "1.0-1" not in versions


def test_sync_killed_midway_resumes(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey,
                                    depot: DepotProcess) -> None:
    """SIGKILL in the middle of the package downloads: nothing is published, and
    the next sync downloads only what had not been verified and kept."""
    repo = build_apt_repo(upstream.root / "debian", gpg_key, DEBS)
    upstream.slow(suffix(".deb"), bytes_per_second=20_000)  # ~0.3 s a package
    proc = subprocess.Popen([sys.executable, "-m", "pkgdepot", "mirror", "sync", "deb",
                             "--data-dir", str(depot.data_dir), "--config",
                             str(depot.config_path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert upstream.wait_for(lambda log: sum(
            1 for r in log if r.path.endswith(".deb") and r.done) >= 3, timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert depot.get("/deb/dists/stable/InRelease")[0] == 404  # nothing published
    done_before = {r.path for r in upstream.records(suffix(".deb"), status=200)
                   if r.done and not r.aborted}
    upstream.clear_faults()
    upstream.clear_log()
    sync(depot, "deb")
    again = {r.path for r in upstream.records(suffix(".deb"))}
    assert again.isdisjoint(done_before) and len(done_before) >= 1
    assert len(again) < len(repo.packages)
    assert depot.get("/deb/dists/stable/InRelease")[0] == 200
    for p in repo.packages:  # the published state is complete
        status, _h, body = depot.get(f"/deb/{p.path}")
        assert status == 200 and hashlib.sha256(body).hexdigest() == p.sha256


def test_sync_reads_bodies_that_arrive_in_pieces(tmp_path: Path, upstream: Upstream,
                                                  gpg_key: GpgKey, depot: DepotProcess) -> None:
    """Every file comes in 2 kB pieces 50 ms apart (the upstream trickles):
    the sync reads each body to its end instead of taking the first piece for
    the whole file, and serves the packages intact."""
    repo = build_apt_repo(upstream.root / "debian", gpg_key, DEBS)
    upstream.slow(lambda p: True, bytes_per_second=40_000)
    out = sync(depot, "deb")
    assert "published" in out
    for p in repo.packages[:3]:
        status, _headers, body = depot.get("/deb/" + p.path)
        assert status == 200 and len(body) > 4000
        assert hashlib.sha256(body).hexdigest() == p.sha256


BIG_DEBS = [DebSpec(f"big{i}", "1.0", size_padding=60_000) for i in range(40)]
FULL_DISK_SCRIPT = r"""
mount -t tmpfs -o size=1m pkgdepot-test "$DATA" || exit 99
run() { "$PY" -m pkgdepot "$@" --data-dir "$DATA" --config "$CFG"; echo "rc=$?"; }
echo "== full"; run mirror sync deb
echo "== list"; run snapshot list deb --json
mount -o remount,size=64m "$DATA" || exit 98
echo "== room"; run mirror sync deb
echo "== verify"; run verify
"""


def test_mirror_sync_on_a_full_disk_publishes_nothing_then_resumes(
        tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> None:
    """The data directory (a 1 MB tmpfs in a private mount namespace, gone
    with it) fills up while the packages (40 x 60 kB) are written: the sync
    fails with a message that says so and publishes nothing. Once there is
    room, the next sync keeps what was already written and publishes a state
    whose every blob holds the bytes its name says."""
    build_apt_repo(upstream.root / "debian", gpg_key, BIG_DEBS)
    data = tmp_path / "data"
    data.mkdir()
    cfg = tmp_path / "pkgdepot.toml"
    cfg.write_text(config(upstream, gpg_key.public_armored))
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", FULL_DISK_SCRIPT],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, timeout=300,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PY": sys.executable,
             "DATA": str(data), "CFG": str(cfg), "PYTHONPATH": str(ROOT)})
    out = proc.stdout
    assert proc.returncode == 0, out
    parts = dict(p.split("\n", 1) for p in out.split("== ")[1:])
    assert "rc=1" in parts["full"] and "full" in parts["full"].lower(), parts["full"]
    assert "nothing published" in parts["full"], parts["full"]
    assert '"id"' not in parts["list"], parts["list"]  # no state at all
    assert "rc=0" in parts["room"] and "published snapshot" in parts["room"], parts["room"]
    assert "40 packages" in parts["room"], parts["room"]
    assert "rc=0" in parts["verify"], parts["verify"]
    assert not any(data.iterdir()), "the tmpfs leaked out of its mount namespace"
