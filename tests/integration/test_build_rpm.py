"""pkgdepot build of an rpm-family template: real rpms built by rpmbuild
(a static busybox as the shell, the rpm tool with its libraries, a package
with a %post scriptlet), registered by the target's own rpm in the root."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.depot import DepotProcess
from tests.integration.test_build import pkgdepot
from tests.support.busybox import static_busybox
from tests.support.fixtures import require_tools
from tests.support.keys import GpgKey
from tests.support.repos import RpmSpec, build_rpm_repo
from tests.support.tarballs import tar_differences, zst_members
from tests.support.upstream import Upstream

SKIP = ("/usr/share/doc", "/usr/share/man", "/usr/share/locale", "/usr/share/lintian")


def rpm_tool() -> RpmSpec:
    """The host's rpm program with its shared libraries and configuration,
    set up as an rpm distribution would be (database in /var/lib/rpm)."""
    listed = subprocess.run(["dpkg", "-L", "rpm", "rpm-common", "librpm9", "librpmio9"],
                            capture_output=True, text=True, check=True).stdout.split()
    ldd = subprocess.run(["ldd", "/usr/bin/rpm"], capture_output=True, text=True,
                         check=True).stdout
    libs = [w for w in ldd.split() if w.startswith("/")]
    files: dict[str, bytes] = {}
    executable = []
    for path in [*listed, *libs]:
        p = Path(path)
        if p.is_file() and not path.startswith(SKIP):
            files[path] = p.read_bytes()
            if p.stat().st_mode & 0o111:
                executable.append(path)
    files["/etc/rpm/macros.dbpath"] = b"%_dbpath /var/lib/rpm\n"
    return RpmSpec("rpm", "4.18", arch="x86_64", files=files, executable=executable,
                   requires=["busybox"])


@pytest.fixture
def depot(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> Iterator[DepotProcess]:
    require_tools("rpmbuild", "createrepo_c", "unshare")
    shell = static_busybox().read_bytes()
    specs = [
        RpmSpec("busybox", "1.35", arch="x86_64", files={"bin/busybox": shell, "bin/sh": shell},
                executable=["bin/busybox", "bin/sh"]),
        rpm_tool(),
        RpmSpec("hello-post", "1.0", requires=["busybox"],
                scripts={"post": 'echo "hello-post %post ran" > /etc/hello-post.ran\n'}),
        RpmSpec("distro-repos", "1.0", files={
            "etc/yum.repos.d/distro.repo": b"[distro]\nbaseurl=http://mirror.example/\n"}),
    ]
    build_rpm_repo(upstream.root / "el", gpg_key, specs)
    with DepotProcess(tmp_path / "depot",
                      f'[repos.el]\nupstreams = ["{upstream.url}/el"]\n') as d:
        yield d


def tree(tmp_path: Path, depot: DepotProcess, packages: str) -> Path:
    leaf = tmp_path / "templates/el/9/x86_64"
    (leaf / "config").mkdir(parents=True)
    (leaf / "config/build.toml").write_text(
        f'family = "rpm"\ndepot = "{depot.url}"\n[[repositories]]\nname = "el"\n'
        'gpgkey = "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-el"\n')
    (leaf / "config/minimal.list").write_text(packages)
    return leaf


def test_rpm_template_registered_by_target_rpm(tmp_path: Path, depot: DepotProcess,
                                               host_state_guard: object) -> None:
    leaf = tree(tmp_path, depot, "rpm\nhello-post\ndistro-repos\n")
    out = tmp_path / "root"
    pkgdepot("build", str(leaf), "--set", "minimal", "--out", str(out),
             "--cache", str(tmp_path / "cache"))
    proc = subprocess.run(["chroot", str(out), "rpm", "-qa", "--qf", "%{NAME}\n"],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == ["busybox", "distro-repos", "hello-post", "rpm"]
    assert (out / "var/lib/rpm/rpmdb.sqlite").exists()  # the target's own location
    assert (out / "etc/hello-post.ran").read_text() == "hello-post %post ran\n"
    # the template is a client of the depot; the distribution's repo file is kept, disabled
    repo = (out / "etc/yum.repos.d/pkgdepot-el.repo").read_text()
    assert f"baseurl={depot.url}/el/\n" in repo and "gpgcheck=1\n" in repo
    assert (out / "etc/yum.repos.d/distro.repo.disabled").exists()
    assert not (out / "etc/yum.repos.d/distro.repo").exists()


def test_rpm_template_without_rpm_fails_clearly(tmp_path: Path, depot: DepotProcess) -> None:
    leaf = tree(tmp_path, depot, "hello-post\n")
    err = pkgdepot("build", str(leaf), "--set", "minimal", "--out", str(tmp_path / "root"),
                   "--cache", str(tmp_path / "cache"), ok=False).stderr
    assert "has no rpm: the target cannot register its packages itself" in err
    assert "--appliance" in err
    # with --appliance the same list builds: files only, nothing run
    pkgdepot("build", str(leaf), "--set", "minimal", "--appliance", "--out",
             str(tmp_path / "app"), "--cache", str(tmp_path / "cache"))
    assert (tmp_path / "app/bin/sh").exists() and not (tmp_path / "app/etc/hello-post.ran").exists()


def test_rpm_template_reproducible(tmp_path: Path, depot: DepotProcess) -> None:
    """With SOURCE_DATE_EPOCH the target's rpm (4.18 here) records install
    times from it (one second apart, in install order) and the database's
    shared-memory index is dropped: two builds are byte-identical."""
    leaf = tree(tmp_path, depot, "rpm\nhello-post\ndistro-repos\n")
    outs = [tmp_path / f"el{i}.tar.zst" for i in range(2)]
    for out in outs:
        pkgdepot("build", str(leaf), "--set", "minimal", "--format", "tar.zst", "--out",
                 str(out), "--cache", str(tmp_path / "cache"),
                 env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert tar_differences(*outs) == []
    assert outs[0].read_bytes() == outs[1].read_bytes()
    names = {m.name for m, _ in zst_members(outs[0])}
    assert "./var/lib/rpm/rpmdb.sqlite" in names
    assert "./var/lib/rpm/rpmdb.sqlite-shm" not in names
