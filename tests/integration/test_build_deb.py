"""pkgdepot build of the shipped Debian 12 example tree: real Debian
packages (the host's, repacked), a signed repository served through a real
depot, configured by the target's own dpkg inside the new root."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgdepot.build.chroot import run_in
from tests.depot import ROOT, DepotProcess
from tests.integration.test_build import pkgdepot
from tests.support import hostdebs
from tests.support.fixtures import require_tools
from tests.support.keys import GpgKey
from tests.support.repos import AptRepo, DebSpec, publish_debs
from tests.support.tarballs import tar_differences, tar_members, zst_members
from tests.support.upstream import Upstream

EXAMPLE = ROOT / "examples/templates/debian/12/amd64"
FAILING = DebSpec("licence-check", "1.0", depends="dpkg", scripts={
    "postinst": "#!/bin/sh\necho 'licence-check: cannot reach the licence server' >&2\nexit 3\n"})


def _example_names() -> list[str]:
    names = []
    for f in (ROOT / "examples/templates/debian/config").glob("*.list"):
        for line in f.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("@"):
                names.append(line)
    return names


@pytest.fixture(scope="session")
def bookworm_repo(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> AptRepo:
    """The host's Essential/required packages and the example sets, with
    their dependencies, repacked and published as suite bookworm."""
    require_tools("dpkg-deb", "dpkg-query", "apt-ftparchive", "unshare")
    pkgs = hostdebs.installed()
    if "dpkg" not in pkgs:
        pytest.skip("the host is not a Debian system")
    required = [n for n, f in pkgs.items() if f["Essential"] == "yes"
                or f["Priority"] == "required"]
    names = hostdebs.closure([*required, *_example_names()], pkgs)
    root = tmp_path_factory.mktemp("bookworm")
    debs = hostdebs.repack_all(names, root / "repack")
    return publish_debs(root / "debian", gpg_key, debs, suite="bookworm", specs=[FAILING])


@pytest.fixture
def depot(tmp_path: Path, bookworm_repo: AptRepo) -> Iterator[DepotProcess]:
    with Upstream(bookworm_repo.root.parent) as up, DepotProcess(
            tmp_path / "depot", f'[repos.debian]\nupstreams = ["{up.url}/debian"]\n') as d:
        yield d


def chroot(root: Path, *cmd: str) -> str:
    proc = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                            "LC_ALL": "C"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def example_copy(tmp_path: Path) -> Path:
    """The shipped tree, with a level of the test's own below it."""
    shutil.copytree(EXAMPLE.parents[1], tmp_path / "templates/debian")
    return tmp_path / "templates/debian/12/amd64"


def test_minimal_template_configured_by_target_dpkg(
        tmp_path: Path, depot: DepotProcess, bookworm_repo: AptRepo,
        host_state_guard: object) -> None:
    leaf = example_copy(tmp_path)
    # the test's level: trust the test repository's key, and a script after the shipped one
    keyfile = leaf / "config/overlay/etc/apt/trusted.gpg.d/pkgdepot-test.asc"
    keyfile.parent.mkdir(parents=True)
    shutil.copyfile(bookworm_repo.key.public_armored, keyfile)
    (leaf / "config/post-install.d").mkdir(parents=True)
    (leaf / "config/post-install.d/95-mark").write_text(
        "#!/bin/sh\nset -e\necho \"after $(cat /etc/hostname) via $PKGDEPOT_DEPOT\" > /etc/mark\n")
    out = tmp_path / "root"
    lockfile = tmp_path / "minimal.lock"
    # resolve, write the lock and build in one call
    err = pkgdepot("build", str(leaf), "--set", "minimal", "--depot", depot.url,
                   "--write-lock", str(lockfile), "--out", str(out),
                   "--cache", str(tmp_path / "cache")).stderr.splitlines()
    lock = json.loads(lockfile.read_text())["packages"]
    locked = {p["name"] for p in lock}
    for p in lock:  # the lock carries each package's real size
        cached = tmp_path / "cache" / f"{p['sha256']}-{p['location'].rsplit('/', 1)[-1]}"
        assert p["size"] == cached.stat().st_size > 0, p
    # plain progress (not a terminal): the download's real size, every package unpacked
    # and set up once by the target's dpkg, a final line per step
    total = sum(p["size"] for p in lock) / 1e6
    assert f"downloading {len(lock)} packages: done, {total:.1f} MB in " in "\n".join(err)
    steps = [ln for ln in err if ln.startswith("installing with the target's dpkg")]
    assert steps[-1].startswith(f"installing with the target's dpkg (unpack, set up): done, "
                                f"{2 * len(lock)} steps in "), steps
    assert {"dpkg", "base-passwd", "apt", "libc6"} <= locked
    # the database is the target's own: every locked package installed and configured
    status = chroot(out, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Package}\n")
    rows = dict(line.split("|")[::-1] for line in status.splitlines())
    assert set(rows) == locked
    assert {s.strip() for s in rows.values()} == {"ii"}, rows
    assert chroot(out, "dpkg", "--audit") == ""
    assert (out / "var/lib/dpkg/status").stat().st_size > 10_000
    assert (out / "var/lib/dpkg/info/base-passwd.list").exists()
    # maintainer scripts ran: base-passwd's postinst wrote /etc/passwd and /etc/group
    assert (out / "etc/passwd").read_text().startswith("root:x:0:0:")
    assert "\nshadow:" in (out / "etc/group").read_text()
    assert (out / "bin").is_symlink() and (out / "usr/bin/dpkg").exists()
    # nothing of the build is left behind, nothing mounted stays
    assert not (out / "usr/sbin/policy-rc.d").exists()
    assert not (out / "etc/dpkg/dpkg.cfg.d/pkgdepot-build-unsafe-io").exists()
    assert not (out / "var/cache/pkgdepot-debs").exists()
    assert not list((out / "proc").iterdir()) and not list((out / "dev").iterdir())
    # overlay and post-install scripts of every level, in name order
    assert (out / "etc/apt/apt.conf.d/90pkgdepot-norecommends").exists()
    assert (out / "etc/motd").read_text() == "Debian 12 template built by pkgdepot\n"
    assert (out / "etc/mark").read_text() == f"after localhost via {depot.url}\n"
    # the template is a client of the depot: apt-get installs through it
    sources = (out / "etc/apt/sources.list.d/pkgdepot.sources").read_text()
    assert f"URIs: {depot.url}/debian\nSuites: bookworm\n" in sources
    # (with /proc and /dev mounted in a private namespace, as a container runtime would)
    # maintainer scripts see a chroot (libc6's postinst then skips `telinit u; sleep 1`)
    run_in(out, ["ischroot"])
    run_in(out, ["apt-get", "update"])
    run_in(out, ["apt-get", "install", "-y", "less"], {"DEBIAN_FRONTEND": "noninteractive"})
    assert "ii  less" in chroot(out, "dpkg", "-l", "less")


def test_failing_maintainer_script_is_named(tmp_path: Path, depot: DepotProcess) -> None:
    """A postinst that fails stops the build with the package's name and the
    script's own output."""
    leaf = example_copy(tmp_path)
    (leaf / "config/licensed.list").write_text("@minimal\nlicence-check\n")
    err = pkgdepot("build", str(leaf), "--set", "licensed", "--depot", depot.url,
                   "--out", str(tmp_path / "root"), "--cache", str(tmp_path / "cache"),
                   ok=False).stderr
    assert "licence-check could not be set up by the target's dpkg" in err
    assert "cannot reach the licence server" in err
    assert "post-installation script subprocess returned error exit status 3" in err


def test_full_template_reproducible(tmp_path: Path, depot: DepotProcess) -> None:
    """With SOURCE_DATE_EPOCH, two full builds (the target's dpkg and its
    maintainer scripts ran) from the same lock are byte-identical tarballs,
    whatever the caller's umask: logs, caches and backups the build leaves are
    removed, scripts see SOURCE_DATE_EPOCH, and every time is clamped. If
    not, the differing members are listed (type, mode, owners, time, link
    target, size, sha256)."""
    leaf = example_copy(tmp_path)
    lockfile = tmp_path / "minimal.lock"
    pkgdepot("build", str(leaf), "--set", "minimal", "--depot", depot.url, "--write-lock",
             str(lockfile), "--resolve-only")
    epoch = 1700000000
    outs = []
    for i, umask in enumerate((0o022, 0o077)):   # the caller's umask does not matter
        outs.append(tmp_path / f"minimal{i}.tar.zst")
        pkgdepot("build", str(leaf), "--depot", depot.url, "--lock", str(lockfile), "--format",
                 "tar.zst", "--out", str(outs[-1]), "--cache", str(tmp_path / "cache"),
                 env={"SOURCE_DATE_EPOCH": str(epoch)}, umask=umask)
    members = tar_members(outs[0])
    assert "./usr/bin/dpkg" in members and "./var/lib/dpkg/status" in members
    assert tar_differences(outs[0], outs[1]) == []
    assert outs[0].read_bytes() == outs[1].read_bytes()
    # every time clamped, in whole seconds (no PAX header needed); the build's logs,
    # caches and backups are gone
    contents = {}
    for m, data in zst_members(outs[0]):
        assert m.mtime <= epoch and not m.pax_headers, (m.name, m.mtime, m.pax_headers)
        contents[m.name] = data
    for gone in ("./var/log/dpkg.log", "./var/log/alternatives.log",
                 "./var/cache/ldconfig/aux-cache", "./var/lib/dpkg/status-old",
                 "./var/cache/debconf/config.dat-old"):
        assert gone not in members, gone
    assert "./var/lib/dpkg/status" in members and "./var/cache/debconf/config.dat" in members
    # maintainer scripts saw SOURCE_DATE_EPOCH: shadow's last password change is its day
    root_line = contents["./etc/shadow"].decode().splitlines()[0].split(":")
    assert root_line[0] == "root" and root_line[2] == str(epoch // 86400)


def test_default_set_resolves_on_top_of_minimal(tmp_path: Path, depot: DepotProcess) -> None:
    """The shipped `default` set (`@minimal` plus an operator's tools) resolves
    against the same packages: everything `minimal` locks, and less and procps
    with what they need."""
    leaf = example_copy(tmp_path)
    locks = {}
    for name in ("minimal", "default"):
        lockfile = tmp_path / f"{name}.lock"
        pkgdepot("build", str(leaf), "--set", name, "--depot", depot.url, "--write-lock",
                 str(lockfile), "--resolve-only")
        locks[name] = {p["name"] for p in json.loads(lockfile.read_text())["packages"]}
    assert {"apt", "dpkg", "base-files"} <= locks["minimal"]
    assert locks["minimal"] < locks["default"]
    assert {"less", "procps"} <= locks["default"] - locks["minimal"]
