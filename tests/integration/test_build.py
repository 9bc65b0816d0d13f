"""pkgdepot build --appliance: a package list -> resolved (libsolv), fetched
through the depot, unpacked with libarchive, with a manifest; lock files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.depot import ROOT, DepotProcess
from tests.support.keys import GpgKey
from tests.support.repos import DebSpec, build_apt_repo
from tests.support.upstream import Upstream, suffix

DEBS = [DebSpec("base-files", "12", files={"etc/debian_version": b"12.0\n"}),
        DebSpec("libgreet", "1.0", files={"usr/lib/libgreet.so": b"lib\n"}),
        DebSpec("greet", "1.0", depends="libgreet (>= 1.0)",
                files={"usr/bin/greet": b"#!/bin/sh\necho hi\n"}),
        DebSpec("extra", "1.0", files={"usr/share/extra": b"x\n"}),
        DebSpec("broken", "1.0", depends="nonexistent")]


@pytest.fixture
def depot(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> Iterator[DepotProcess]:
    build_apt_repo(upstream.root / "debian", gpg_key, DEBS)
    cfg = f'[repos.deb]\nupstreams = ["{upstream.url}/debian"]\n'
    with DepotProcess(tmp_path / "depot", cfg) as d:
        yield d


def tree(root: Path, depot: DepotProcess, lists: dict[str, str]) -> Path:
    (root / "config").mkdir(parents=True)
    (root / "config/build.toml").write_text(
        f'family = "deb"\ndepot = "{depot.url}"\ninclude_required = false\n'
        '[[repositories]]\nname = "deb"\nsuite = "stable"\ncomponents = ["main"]\n')
    for rel, text in lists.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    leaf = root / "test/1/amd64"
    leaf.mkdir(parents=True, exist_ok=True)
    return leaf


def pkgdepot(*args: str, ok: bool = True, env: dict[str, str] | None = None,
             umask: int = -1) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (`env` added to this environment, `umask` if given)."""
    proc = subprocess.run([sys.executable, "-m", "pkgdepot", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, umask=umask,
                          env={**os.environ, **env} if env else None)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


def test_appliance_and_lock(tmp_path: Path, depot: DepotProcess, upstream: Upstream) -> None:
    leaf = tree(tmp_path / "t", depot, {"config/default.list": "greet\nextra\nbase-files\n",
                                        "test/1/amd64/config/default.list": "extra-\n"})
    explain = pkgdepot("build", str(leaf), "--explain").stdout
    assert "extra-" in explain and "greet" in explain
    out = tmp_path / "out"
    lockfile = tmp_path / "lock.json"
    pkgdepot("build", str(leaf), "--appliance", "--out", str(out), "--write-lock",
             str(lockfile), "--cache", str(tmp_path / "cache"))
    assert (out / "usr/bin/greet").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (out / "usr/lib/libgreet.so").exists() and not (out / "usr/share/extra").exists()
    manifest = json.loads((out / ".pkgdepot-manifest.json").read_text())
    assert sorted(p["name"] for p in manifest["packages"]) == ["base-files", "greet",
                                                                 "libgreet"]
    greet = next(p for p in manifest["packages"] if p["name"] == "greet")
    assert "/usr/bin/greet" in greet["files"]
    lock = json.loads(lockfile.read_text())
    assert {p["name"]: p["version"] for p in lock["packages"]} == {
        "base-files": "12", "greet": "1.0", "libgreet": "1.0"}
    assert all(len(p["sha256"]) == 64 for p in lock["packages"])
    # real sizes (the index's Size), not libsolv's 0 for deb repositories
    for p in lock["packages"]:
        assert p["size"] == (upstream.root / "debian" / p["location"]).stat().st_size > 500, p
    assert upstream.count(suffix(".deb")) == 3  # every package came through the depot
    # rebuild from the lock: exactly that set, from the depot's cache
    out2 = tmp_path / "out2"
    pkgdepot("build", str(leaf), "--appliance", "--out", str(out2), "--lock", str(lockfile),
             "--cache", str(tmp_path / "cache2"))
    assert (out2 / "usr/bin/greet").exists()
    assert upstream.count(suffix(".deb")) == 3
    # the download checks the size: a lock that says otherwise stops the build
    lock["packages"][0]["size"] += 1
    lockfile.write_text(json.dumps(lock))
    err = pkgdepot("build", str(leaf), "--appliance", "--out", str(tmp_path / "out3"), "--lock",
                   str(lockfile), "--cache", str(tmp_path / "cache3"), ok=False).stderr
    bad = lock["packages"][0]
    assert f"{bad['location']}: does not match: {bad['size'] - 1} bytes, the lock says " \
           f"{bad['size']}" in err
    assert not list((tmp_path / "cache3").glob(f"{bad['sha256']}-*"))  # nothing kept of it


def test_unsatisfiable_list_is_explained(tmp_path: Path, depot: DepotProcess) -> None:
    leaf = tree(tmp_path / "t", depot, {"config/default.list": "broken\n"})
    err = pkgdepot("build", str(leaf), "--appliance", "--out", str(tmp_path / "o"),
                   ok=False).stderr
    assert "nothing provides nonexistent needed by broken" in err


def test_reproducible_tarballs(tmp_path: Path, depot: DepotProcess) -> None:
    """With SOURCE_DATE_EPOCH, two builds from the same lock are byte-identical."""
    import tarfile

    leaf = tree(tmp_path / "t", depot, {"config/default.list": "greet\n"})
    lockfile = tmp_path / "lock.json"
    assert "give --write-lock FILE" in pkgdepot("build", str(leaf), "--resolve-only",
                                                ok=False).stderr
    pkgdepot("build", str(leaf), "--write-lock", str(lockfile), "--resolve-only", "--out",
             str(tmp_path / "unbuilt"))
    assert lockfile.exists() and not (tmp_path / "unbuilt").exists()
    outs = []
    for i, fmt in enumerate(["tar.zst", "tar.zst", "tar.gz", "tar.xz"]):
        out = tmp_path / f"img{i}.{fmt}"
        pkgdepot("build", str(leaf), "--appliance", "--lock", str(lockfile), "--format", fmt,
                 "--out", str(out), "--cache", str(tmp_path / f"cache{i}"),
                 env={"SOURCE_DATE_EPOCH": "1700000000"})
        outs.append(out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    with tarfile.open(outs[2]) as t:
        names = t.getnames()
        assert "./usr/bin/greet" in names and "./.pkgdepot-manifest.json" in names
        assert all(m.mtime <= 1700000000 for m in t.getmembers())
        assert not any(n.startswith("/") or ".." in n.split("/") for n in names)
    with tarfile.open(outs[3]) as t:
        assert "./usr/lib/libgreet.so" in t.getnames()
