"""Post-install scripts, overlays and depot client files on a tiny real root
(a static busybox as /bin/sh): scripts run inside the root in name order,
a failure names the script and shows its output."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pkgdepot.build.clients import disable_distribution_repos, write_clients
from pkgdepot.build.fetch import RepoSpec
from pkgdepot.build.finish import ScriptError, apply_overlay, remove_build_traces, run_scripts
from tests.support.busybox import static_busybox
from tests.support.fixtures import require_tools


@pytest.fixture
def root(tmp_path: Path) -> Path:
    require_tools("unshare", "chroot")
    busybox = static_busybox()
    r = tmp_path / "root"
    (r / "bin").mkdir(parents=True)
    shutil.copy2(busybox, r / "bin/busybox")
    for tool in ("sh", "cat", "echo"):
        (r / "bin" / tool).symlink_to("busybox")
    (r / "etc").mkdir()
    return r


def script(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / "scripts" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text("#!/bin/sh\n" + body)
    return p


def test_scripts_run_inside_root_in_order(tmp_path: Path, root: Path) -> None:
    scripts = {p.name: p for p in [
        script(tmp_path, "20-second", 'echo "second $(cat /etc/order)" > /etc/order\n'),
        script(tmp_path, "10-first", "echo first > /etc/order\n")]}
    assert run_scripts(root, scripts, {}) == ["10-first", "20-second"]
    assert (root / "etc/order").read_text() == "second first\n"
    assert not (root / "tmp/pkgdepot-post-install").exists()


def test_failing_script_is_named_with_output(tmp_path: Path, root: Path) -> None:
    scripts = {"10-ok": script(tmp_path, "10-ok", "echo ok > /etc/ok\n"),
               "20-bad": script(tmp_path, "20-bad", "echo 'no network here' >&2\nexit 7\n"),
               "30-never": script(tmp_path, "30-never", "echo x > /etc/never\n")}
    with pytest.raises(ScriptError) as e:
        run_scripts(root, scripts, {})
    assert "20-bad" in str(e.value) and "exit 7" in str(e.value)
    assert "no network here" in str(e.value)
    assert (root / "etc/ok").exists() and not (root / "etc/never").exists()


def test_overlay_and_clients(tmp_path: Path, root: Path) -> None:
    src = tmp_path / "overlay/etc/motd"
    src.parent.mkdir(parents=True)
    src.write_text("hello\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "sbin").symlink_to("usr/bin")
    apply_overlay(root, {"etc/motd": src})
    assert (root / "etc/motd").read_text() == "hello\n"
    with pytest.raises(ScriptError, match="is a link in the template"):
        apply_overlay(root, {"sbin/tool": src})
    assert not (root / "usr/bin/tool").exists()
    # the distribution's own repository files are kept, disabled
    (root / "etc/yum.repos.d").mkdir(parents=True)
    (root / "etc/yum.repos.d/distro.repo").write_text("[distro]\nbaseurl=http://mirror.example/\n")
    moved = disable_distribution_repos(root, "rpm")
    assert moved == [root / "etc/yum.repos.d/distro.repo.disabled"]
    write_clients(root, "rpm", [RepoSpec("http://depot:3142", "fedora", snapshot="prod-q1")], {},
                  {"fedora": "file:///etc/pki/rpm-gpg/KEY"})
    text = (root / "etc/yum.repos.d/pkgdepot-fedora.repo").read_text()
    assert "baseurl=http://depot:3142/snapshot/fedora/prod-q1/\n" in text
    assert "gpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/KEY\n" in text
    (root / "etc/apt/sources.list.d").mkdir(parents=True)
    (root / "etc/apt/sources.list").write_text("deb http://mirror.example/debian bookworm main\n")
    disable_distribution_repos(root, "deb")
    write_clients(root, "deb", [RepoSpec("http://depot:3142", "debian", "bookworm")],
                  {"debian": "/etc/apt/keyrings/debian.asc"}, {})
    assert (root / "etc/apt/sources.list.disabled").exists()
    assert not (root / "etc/apt/sources.list").exists()
    assert (root / "etc/apt/sources.list.d/pkgdepot.sources").read_text().endswith(
        "URIs: http://depot:3142/debian\nSuites: bookworm\nComponents: main\n"
        "Signed-By: /etc/apt/keyrings/debian.asc\n")


def test_build_traces_removed_and_epoch_passed(tmp_path: Path, root: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Logs, caches, backups and seeds go, machine-id is left empty, nothing
    is removed through a link leading out of the root, and scripts see the
    build's SOURCE_DATE_EPOCH."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    run_scripts(root, {"10-epoch": script(tmp_path, "10-epoch",
                                          'echo "$SOURCE_DATE_EPOCH" > /etc/epoch\n')}, {})
    assert (root / "etc/epoch").read_text() == "1700000000\n"
    traces = ["var/log/dpkg.log", "var/log/apt/history.log", "var/log/apt/term.log",
              "var/cache/ldconfig/aux-cache", "var/lib/dpkg/status-old",
              "var/cache/debconf/config.dat-old", "var/lib/systemd/random-seed"]
    kept = ["var/lib/dpkg/status", "var/cache/debconf/config.dat", "var/log/wtmp"]
    for rel in [*traces, *kept, "etc/machine-id"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("2023-11-14 22:13:20 something\n")
    outside = tmp_path / "outside"
    (outside / "apt").mkdir(parents=True)
    (outside / "apt/history.log").write_text("the host's\n")
    (root / "var/lib/dbus").mkdir(parents=True)
    (root / "var/lib/dbus/machine-id").symlink_to(outside / "apt/history.log")
    (root / "var/cache/apt").symlink_to(outside / "apt")   # a link out: not followed
    (outside / "apt/pkgcache.bin").write_text("the host's\n")
    touched = remove_build_traces(root)
    assert touched == sorted([*traces, "var/lib/dbus/machine-id", "etc/machine-id"])
    assert not any((root / rel).exists() for rel in traces)
    assert all((root / rel).exists() for rel in kept)
    assert (root / "etc/machine-id").read_bytes() == b""
    assert (outside / "apt/history.log").read_text() == "the host's\n"
    assert (outside / "apt/pkgcache.bin").read_text() == "the host's\n"
