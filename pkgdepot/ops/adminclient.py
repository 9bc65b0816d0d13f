"""The command line's side of the admin API (server.admin_listen).

`pkgdepot mirror sync` hands its work to the running depot when one listens
there: the sync then runs in the process that serves the mirror, so no second
process writes the catalog, and the command starts in a fraction of the time
(it imports no download machinery; small syncs were mostly Python start-up).
Only the standard library is used here, before anything heavy is imported."""

from __future__ import annotations

import http.client
import json
import os
import stat
import sys
from pathlib import Path

from pkgdepot.config import Config, parse_listen
from pkgdepot.errors import ConfigError

MIN_TOKEN = 16
CONNECT_TIMEOUT = 2.0


class Unavailable(Exception):
    """No depot answers on server.admin_listen."""


def read_token(config: Config) -> bytes:
    """The admin token from server.admin_token_file, checked."""
    path = Path(config.admin_token_file)
    try:
        st = os.stat(path)
        token = path.read_bytes().strip()
    except OSError as e:
        raise ConfigError(f"server.admin_token_file: cannot read {path}: {e.strerror}") from e
    if len(token) < MIN_TOKEN or any(c < 0x21 or c > 0x7e for c in token):
        raise ConfigError(f"server.admin_token_file: {path} must hold one token of at least "
                          f"{MIN_TOKEN} printable characters",
                          hint="e.g. head -c 32 /dev/urandom | base64 > FILE")
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError(f"server.admin_token_file: {path} is readable by other users",
                          hint=f"chmod 600 {path}")
    return token


def call(config: Config, method: str, path: str) -> tuple[int, bytes]:
    """One admin request; its status and body. Unavailable when nothing
    listens (the connection is refused or times out)."""
    host, port = parse_listen("server.admin_listen", config.admin_listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    token = read_token(config).decode()
    conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
    try:
        try:
            conn.connect()
        except OSError as e:
            raise Unavailable(f"{host}:{port}: {e.strerror or e}") from e
        assert conn.sock is not None
        conn.sock.settimeout(None)  # a sync takes as long as it takes
        conn.request(method, path, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def sync(config: Config, names: list[str]) -> int:
    """Ask the running depot to sync `names`, one after the other; print
    what it says. Exit status 1 if any failed."""
    failed = 0
    for name in names:
        status, body = call(config, "POST", f"/mirror/{name}/sync")
        if status == 200:
            print(json.loads(body)["summary"] + f" (by the depot at {config.admin_listen})")
        else:
            text = body.decode("utf-8", "replace").strip()
            print(f"pkgdepot: {name}: sync failed, nothing published: {text}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
