"""`pkgdepot client-config`: the files it writes, used by the real apt-get,
dnf and zypper against a depot serving signed test repositories; --undo
restores the machine's earlier files byte for byte."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.depot import ROOT, DepotProcess
from tests.integration.test_clients import apt_repo, depot, rpm_repo
from tests.support.clients import AptClient, DnfClient, ZypperClient
from tests.support.repos import AptRepo, RpmRepo
from tests.support.upstream import Upstream

__all__ = ["apt_repo", "depot", "rpm_repo"]  # the depot and repositories of test_clients

pytestmark = pytest.mark.clients

BROKEN = "http://127.0.0.1:9/broken"  # nothing listens: a client that still uses it fails


def client_config(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pkgdepot", "client-config", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def tree(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*"))
            if p.is_file()}


def cached(depot: DepotProcess, ending: str) -> list[str]:
    with sqlite3.connect(depot.data_dir / "catalog.sqlite") as db:
        return [r[0] for r in db.execute("SELECT key FROM entries") if r[0].endswith(ending)]


def apt_machine(tmp_path: Path, sources: str) -> tuple[AptClient, Path]:
    """An apt client whose configuration directory is ROOT/etc/apt."""
    c = AptClient(tmp_path / "apt")
    root = tmp_path / "machine"
    c.etc = root / "etc/apt"
    for d in ("apt.conf.d", "sources.list.d", "trusted.gpg.d", "preferences.d", "auth.conf.d"):
        (c.etc / d).mkdir(parents=True)
    (c.etc / "sources.list").write_text(sources)
    return c, root


def test_apt_proxy_snippet(tmp_path: Path, apt_repo: AptRepo, depot: DepotProcess,
                           upstream: Upstream) -> None:
    c, root = apt_machine(tmp_path, apt_repo.sources_line(f"{upstream.url}/debian") + "\n")
    before = tree(root)
    printed = client_config("apt", "--depot", depot.url, "--root", str(root))
    assert f'Acquire::http::Proxy "{depot.url}";' in printed and tree(root) == before
    client_config("apt", "--depot", depot.url, "--root", str(root), "--install")
    assert (root / "etc/apt/sources.list").read_bytes() == before["etc/apt/sources.list"]
    c.update()
    c.install(["hello"])
    assert c.installed() == {"hello": "1.0", "libhello": "1.0"}
    # through the depot (which files the upstream under its named repository)
    assert cached(depot, "/hello_1.0_all.deb") == [f"repo/deb/{apt_repo.package('hello').path}"]
    client_config("apt", "--depot", depot.url, "--root", str(root), "--undo")
    assert tree(root) == before


def test_apt_named_repository_replaces_sources(tmp_path: Path, apt_repo: AptRepo,
                                              depot: DepotProcess) -> None:
    c, root = apt_machine(tmp_path, apt_repo.sources_line(BROKEN) + "\n")
    (c.etc / "sources.list.d/old.list").write_text(apt_repo.sources_line(BROKEN + "2") + "\n")
    (c.etc / "sources.list.d/keep.conf").write_text("not a sources file\n")
    before = tree(root)
    out = client_config("apt", "--depot", depot.url, "--repo", "deb", "--suite", "stable",
                        "--signed-by", str(apt_repo.key.public_keyring), "--root", str(root),
                        "--install")
    assert "disabled" in out
    sources = (c.etc / "sources.list.d/pkgdepot-deb.sources").read_text()
    assert f"URIs: {depot.url}/deb/" in sources and "Suites: stable" in sources
    assert (c.etc / "sources.list.disabled").exists()
    assert (c.etc / "sources.list.d/old.list.disabled").exists()
    c.update()  # strict: would fail if a broken source were still active
    c.install(["hello"])
    assert c.installed() == {"hello": "1.0", "libhello": "1.0"}
    client_config("apt", "--depot", depot.url, "--root", str(root), "--undo")
    assert tree(root) == before


def test_client_config_refuses_a_second_install_and_an_empty_undo(tmp_path: Path) -> None:
    root = tmp_path / "machine"
    (root / "etc/apt").mkdir(parents=True)
    args = ["apt", "--depot", "http://127.0.0.1:3142", "--root", str(root)]
    client_config(*args, "--install")
    again = subprocess.run([sys.executable, "-m", "pkgdepot", "client-config", *args,
                            "--install"], capture_output=True, text=True, cwd=ROOT,
                           timeout=60, check=False)
    assert again.returncode == 1 and "--undo first" in again.stderr
    client_config(*args, "--undo")
    assert tree(root) == {}
    empty = subprocess.run([sys.executable, "-m", "pkgdepot", "client-config", *args,
                            "--undo"], capture_output=True, text=True, cwd=ROOT,
                           timeout=60, check=False)
    assert empty.returncode == 1 and "nothing to undo" in empty.stderr
    bad = subprocess.run([sys.executable, "-m", "pkgdepot", "client-config", "apt",
                          "--depot", "http://127.0.0.1:3142", "--repo", "deb",
                          "--root", str(root)], capture_output=True, text=True, cwd=ROOT,
                         timeout=60, check=False)
    assert bad.returncode == 2 and "--suite" in bad.stderr


@pytest.mark.parametrize("form", ["repo", "proxy"])
def test_dnf(form: str, tmp_path: Path, rpm_repo: RpmRepo, depot: DepotProcess,
             upstream: Upstream) -> None:
    c = DnfClient(tmp_path / "dnf")
    root = tmp_path / "machine"
    c.reposdir = root / "etc/yum.repos.d"
    c.reposdir.mkdir(parents=True)
    base = BROKEN if form == "repo" else f"{upstream.url}/rpms"
    (c.reposdir / "old.repo").write_text(rpm_repo.repo_file("old", base))
    before = tree(root)
    args = ["dnf", "--depot", depot.url, "--root", str(root)]
    if form == "repo":
        args += ["--repo", "rpms", "--gpgkey", f"file://{rpm_repo.key.public_armored}",
                 "--unsigned-packages"]
    client_config(*args, "--install")
    assert (c.reposdir / "old.repo.disabled").read_bytes() == before["etc/yum.repos.d/old.repo"]
    c.install(["greet"])
    assert c.installed().get("greet") == "1.0-1"
    if form == "proxy":
        assert f"proxy={depot.url}" in (c.reposdir / "old.repo").read_text()
    assert cached(depot, "/greet-1.0-1.noarch.rpm") == [
        f"repo/rpms/{rpm_repo.package('greet').path}"]
    client_config("dnf", "--depot", depot.url, "--root", str(root), "--undo")
    assert tree(root) == before


@pytest.mark.parametrize("form", ["repo", "rewrite"])
def test_zypper(form: str, tmp_path: Path, rpm_repo: RpmRepo, depot: DepotProcess,
                upstream: Upstream) -> None:
    z = ZypperClient(tmp_path / "zypper")
    z.import_key(rpm_repo.key.public_armored)
    repos = z.root / "etc/zypp/repos.d"
    repos.mkdir(parents=True)
    base = BROKEN if form == "repo" else f"{upstream.url}/rpms/"
    (repos / "old.repo").write_text(f"[old]\nname=old\nenabled=1\nautorefresh=1\n"
                                    f"baseurl={base}\ntype=rpm-md\ngpgcheck=0\n")
    before = tree(repos)
    args = ["zypper", "--depot", depot.url, "--root", str(z.root)]
    if form == "repo":
        args += ["--repo", "rpms", "--gpgkey", f"file://{rpm_repo.key.public_armored}",
                 "--unsigned-packages"]
    client_config(*args, "--install")
    z.refresh()
    z.install(["greet"])
    assert "greet" in z.installed()
    if form == "rewrite":
        assert f"baseurl={depot.url}/127.0.0.1:{upstream.port}/rpms/" in (
            repos / "old.repo").read_text()
    assert cached(depot, "/greet-1.0-1.noarch.rpm") == [
        "repo/rpms/" + rpm_repo.package("greet").path]
    client_config("zypper", "--depot", depot.url, "--root", str(z.root), "--undo")
    assert tree(repos) == before
