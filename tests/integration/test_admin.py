"""The admin API: state changes only on its own address, only with the token.

A real depot with an apt mirror of a signed repository on 127.0.0.1; the
admin API syncs it, tags and untags a state, prunes and collects garbage,
exactly as the command line does. Without a token, with a wrong one, or on
the client port, nothing changes."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.depot import ROOT, DepotProcess, free_port
from tests.support.keys import GpgKey
from tests.support.repos import DebSpec, build_apt_repo
from tests.support.upstream import Upstream, suffix

TOKEN = "s3cret-admin-token-0123456789"


def admin_setup(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey, admin_port: int) -> str:
    """A signed repository of three packages, the token file, and the config
    of a depot mirroring it with its admin API on `admin_port` (with two
    processes, so that the server starts a download helper of its own)."""
    build_apt_repo(upstream.root / "debian", gpg_key,
                   [DebSpec("hello", "1.0", files={"usr/share/hello": b"1\n"}),
                    *(DebSpec(f"pkg{i}", "1.0", size_padding=3000) for i in range(2))])
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    return f"""
[server]
admin_listen = "127.0.0.1:{admin_port}"
admin_token_file = "{token_file}"
[repos.deb]
upstreams = ["{upstream.url}/debian"]
keyring = "{gpg_key.public_armored}"
[repos.deb.mirror]
suites = ["stable"]
processes = 2
concurrency = 2
"""


@pytest.fixture
def env(tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> Iterator[tuple[DepotProcess,
                                                                             str]]:
    admin_port = free_port()
    cfg = admin_setup(tmp_path, upstream, gpg_key, admin_port)
    with DepotProcess(tmp_path / "depot", cfg) as depot:
        yield depot, f"http://127.0.0.1:{admin_port}"


def call(url: str, body: object = None, token: str | None = TOKEN,
         method: str = "POST") -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def cli(depot: DepotProcess, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pkgdepot", *args, "--data-dir",
                           str(depot.data_dir), "--config", str(depot.config_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_sync_tag_untag_prune_gc(env: tuple[DepotProcess, str], upstream: Upstream) -> None:
    depot, admin = env
    # the server's one download worker is still on its first file when its
    # helper process has started
    upstream.stall(suffix(".deb"), 1.0)
    status, body = call(f"{admin}/mirror/deb/sync")
    assert status == 200, body
    result = json.loads(body)
    assert "published snapshot" in result["summary"]
    assert "by a second process)" in result["summary"], result["summary"]
    stamp = result["snapshot"]["timestamp"]
    # the client port now serves what the sync published
    status, _h, _b = depot.get("/deb/dists/stable/InRelease")
    assert status == 200

    status, body = call(f"{admin}/snapshot/deb/tag", {"when": "latest", "tag": "prod-q1"})
    assert status == 200, body
    assert "prod-q1" in cli(depot, "snapshot", "list", "deb")  # the CLI sees the same state
    assert depot.get("/snapshot/deb/prod-q1/dists/stable/InRelease")[0] == 200

    status, body = call(f"{admin}/snapshot/deb/untag", {"tag": "prod-q1"})
    assert status == 200 and json.loads(body)["untagged"] == "prod-q1"
    assert "prod-q1" not in cli(depot, "snapshot", "list", "deb")
    status, body = call(f"{admin}/snapshot/deb/untag", {"tag": "prod-q1"})
    assert status == 404 and b"no tag" in body

    status, body = call(f"{admin}/prune", {"older_than_days": 0, "keep_last": 1, "grace": 0})
    assert status == 200, body
    assert json.loads(body)["removed"] == {"deb": []}  # the newest state always stays
    assert stamp in cli(depot, "snapshot", "list", "deb")
    status, body = call(f"{admin}/gc", {"grace": 0})
    assert status == 200 and json.loads(body)["blobs_deleted"] == 0  # all referenced
    assert depot.get("/deb/dists/stable/InRelease")[0] == 200


def test_token_required(env: tuple[DepotProcess, str]) -> None:
    depot, admin = env
    status, body = call(f"{admin}/snapshot/deb/tag", {"when": "latest", "tag": "x"}, token=None)
    assert status == 401 and b"Authorization: Bearer" in body
    for wrong in ("", "s3cret", TOKEN + "x", TOKEN.upper(), "Basic " + TOKEN):
        status, body = call(f"{admin}/mirror/deb/sync", token=wrong)
        assert status in (401, 403), (wrong, body)
    req = urllib.request.Request(f"{admin}/gc", data=b"{}", method="POST",
                                 headers={"Authorization": "Basic " + TOKEN})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=30)
    assert exc.value.code == 401 and "Bearer" in exc.value.headers["WWW-Authenticate"]
    # nothing happened: no sync ran, so the mirror still has nothing to serve
    status, _h, body = depot.get("/deb/dists/stable/InRelease")
    assert status == 404 and b"has not been synced" in body


def test_bad_requests_on_admin(env: tuple[DepotProcess, str]) -> None:
    _depot, admin = env
    status, body = call(f"{admin}/", method="GET")
    assert status == 200 and b"/mirror/NAME/sync" in body
    assert call(f"{admin}/mirror/deb/sync", method="GET")[0] == 405
    assert call(f"{admin}/mirror/nosuch/sync")[0] == 404
    assert call(f"{admin}/snapshot/deb/tag", {"tag": "x"})[0] == 400  # no "when"
    status, body = call(f"{admin}/snapshot/deb/tag", "not an object")
    assert status == 400 and b"JSON object" in body
    assert call(f"{admin}/nothing-here")[0] == 404


@pytest.mark.parametrize("path", ["/mirror/deb/sync", "/snapshot/deb/tag",
                                  "/snapshot/deb/untag", "/prune", "/gc"])
def test_client_port_never_changes_state(env: tuple[DepotProcess, str], path: str) -> None:
    depot, _admin = env
    url = depot.url + path
    status, body = call(url, {"when": "latest", "tag": "x"})
    assert status == 403 and b"admin_listen" in body
    status, _body = call(url, method="GET")  # an ordinary (refused) read, never an action
    assert status in (403, 404)
    assert depot.get("/deb/dists/stable/InRelease")[0] == 404  # still never synced


def test_admin_off_by_default(tmp_path: Path) -> None:
    """Without server.admin_listen there is no admin address at all, and the
    config refuses an admin address without a token file."""
    proc = subprocess.run([sys.executable, "-m", "pkgdepot", "check-config", "--config",
                           str(_write(tmp_path / "c.toml",
                                      '[server]\nadmin_listen = "127.0.0.1:3143"\n'))],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "admin_token_file" in proc.stderr
    weak = _write(tmp_path / "weak", "short\n")
    proc = subprocess.run([sys.executable, "-m", "pkgdepot", "serve", "--listen",
                           f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"),
                           "--config", str(_write(tmp_path / "w.toml",
                                                  f'[server]\nadmin_listen = "127.0.0.1:'
                                                  f'{free_port()}"\nadmin_token_file = '
                                                  f'"{weak}"\n'))],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "at least 16" in proc.stderr


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    p.chmod(0o600)
    return p


def test_cli_sync_is_done_by_the_running_depot(env: tuple[DepotProcess, str]) -> None:
    """With server.admin_listen set, `pkgdepot mirror sync` asks the depot
    listening there: the sync runs in the server (its log says so) and the
    command prints the depot's summary."""
    depot, _admin = env
    out = cli(depot, "mirror", "sync", "deb")
    assert "published snapshot" in out and "by the depot at 127.0.0.1:" in out, out
    assert "admin: deb: published snapshot" in depot.log()
    status, _h, _b = depot.get("/deb/dists/stable/InRelease")
    assert status == 200
    # --in-process syncs in the command itself: upstream unchanged, nothing to do
    out = cli(depot, "mirror", "sync", "deb", "--in-process")
    assert "upstream unchanged" in out and "by the depot" not in out, out


def test_cli_sync_without_a_listening_depot_syncs_in_process(
        tmp_path: Path, upstream: Upstream, gpg_key: GpgKey) -> None:
    cfg = tmp_path / "pkgdepot.toml"  # nothing listens on the admin port
    cfg.write_text(admin_setup(tmp_path, upstream, gpg_key, free_port()))
    proc = subprocess.run([sys.executable, "-m", "pkgdepot", "mirror", "sync", "deb",
                           "--data-dir", str(tmp_path / "data"), "--config", str(cfg)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no depot answers on server.admin_listen" in proc.stderr
    assert "published snapshot" in proc.stdout and "by the depot" not in proc.stdout
