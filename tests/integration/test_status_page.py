"""The status page of a real depot, rendered by headless Chromium after real
traffic: the numbers its script shows, snapshots with tags and a diff, recent
errors, and a screenshot that is not blank."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.depot import ROOT, DepotProcess
from tests.support.keys import GpgKey
from tests.support.repos import AptRepo, DebSpec, build_apt_repo
from tests.support.upstream import Upstream

V1 = [DebSpec("hello", "1.0", files={"usr/share/hello/v": b"1\n"}),
      DebSpec("gone", "1.0", files={"usr/share/gone": b"g\n"})]
V2 = [DebSpec("hello", "2.0", files={"usr/share/hello/v": b"2\n"}),
      DebSpec("newpkg", "0.1", files={"usr/share/newpkg": b"n\n"})]
BY_HASH = "other/dists/stable/main/binary-amd64/by-hash/SHA256/" + "cd" * 32  # not deb
BROKEN = "debian/pool/main/b/broken/broken_1.0_all.deb"
HEADER_RGB = (0x1F, 0x2A, 0x3C)   # the page's header bar
HIT_RGB = (0x2E, 0x9E, 0x5B)      # hits in the chart


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: run ./install.sh --test")
    return subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--disable-background-networking", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=8000",
         *args], capture_output=True, text=True, timeout=120, check=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})


def publish(depot: DepotProcess, repo: AptRepo) -> None:
    """Fetch the repository's metadata through the depot: a new snapshot."""
    for rel in repo.index_paths():
        if rel.endswith(("InRelease", "Packages", "Packages.gz")):
            status, _h, body = depot.get(f"/deb/{rel}")
            assert status == 200, body


def field(dom: str, repo: str, name: str) -> str:
    row = re.search(rf'<tr data-repo="{re.escape(repo)}">(.*?)</tr>', dom, re.S)
    assert row, f"no row for {repo} in the page"
    cell = re.search(rf'data-field="{name}"[^>]*>([^<]*)<', row.group(1))
    assert cell, f"no {name} for {repo}"
    return cell.group(1)


def test_status_page_in_chromium(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> None:
    from PIL import Image

    cfg = (f'[upstream]\nallow_networks = ["127.0.0.0/8"]\n[cache]\nrevalidate_after = 0\n'
           f'[repos.deb]\nupstreams = ["{upstream.url}/debian"]\n'
           f'keyring = "{gpg_key.public_armored}"\n')
    host = f"127.0.0.1:{upstream.port}"
    with DepotProcess(tmp_path / "depot", cfg) as depot:
        repo = build_apt_repo(upstream.root / "debian", gpg_key, V1)
        publish(depot, repo)
        first = json.loads(depot.get("/snapshot/deb/index.json")[2])["snapshots"][0]["timestamp"]
        subprocess.run([sys.executable, "-m", "pkgdepot", "snapshot", "tag", "deb", first,
                        "prod-q1", "--data-dir", str(depot.data_dir), "--config",
                        str(depot.config_path)], cwd=ROOT, check=True, capture_output=True,
                       timeout=60)
        time.sleep(1.1)  # snapshot times have whole seconds
        repo = build_apt_repo(upstream.root / "debian", gpg_key, V2)
        publish(depot, repo)
        deb = repo.package("hello").path
        for expect in ("MISS", "HIT", "HIT"):
            deadline = time.monotonic() + 10
            while True:   # a second request may still join the first download
                headers = depot.get(f"/deb/{deb}")[1]
                if headers["X-Pkgdepot-Cache"] != "MISS" or expect == "MISS" \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert headers["X-Pkgdepot-Cache"] == expect
        (upstream.root / BY_HASH).parent.mkdir(parents=True, exist_ok=True)
        (upstream.root / BY_HASH).write_bytes(b"not what the name says\n")
        with pytest.raises((ConnectionError, http.client.IncompleteRead)):
            depot.get(f"/{host}/{BY_HASH}")       # fails verification: the client is reset
        upstream.status("/" + BROKEN, 503)
        assert depot.get(f"/deb/{BROKEN.removeprefix('debian/')}")[0] == 502  # upstream error
        status = json.loads(depot.get("/_pkgdepot/status.json")[2])
        assert depot.get("/")[1]["Content-Type"].startswith("text/html")

        page = f"{depot.url}/#diff=deb/prod-q1/latest"
        dom = chromium(tmp_path, "--dump-dom", page).stdout
        shot = tmp_path / "status.png"
        chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", page)

    assert 'data-loaded="1"' in dom, dom[:2000]
    counts = status["counts"]["origins"]["deb"]
    assert (field(dom, "deb", "hit"), field(dom, "deb", "miss")) == (str(counts[0]), str(counts[1]))
    assert int(field(dom, "deb", "hit")) >= 2 and int(field(dom, "deb", "error")) >= 1
    assert re.search(r'data-field="sent_cache" data-bytes="(\d+)"', dom)
    assert f'data-repo="{host}"' in dom                       # a host seen in /HOST/ form
    # snapshots with their tags, and the diff asked for in the link
    snaps = re.search(r'<div data-snapshots="deb">(.*?)</div>', dom, re.S)
    assert snaps and first in snaps.group(1) and "prod-q1" in snaps.group(1)
    assert "+ newpkg 0.1" in dom and "- gone 1.0" in dom and "^ hello 1.0 -&gt; 2.0" in dom
    # recent errors: the bad by-hash file and the failing upstream
    assert 'data-kind="verification"' in dom and 'data-kind="upstream"' in dom
    assert "no limit" in dom

    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1280, 1600)
        colours = rgb.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, f"only {len(colours)} colours: blank?"
    background = max(colours)[1]
    drawn = sum(n for n, c in colours if c != background)
    assert drawn > 0.2 * 1280 * 1600, f"{drawn} pixels differ from the background"
    present = {c for _n, c in colours}
    assert HEADER_RGB in present and HIT_RGB in present
