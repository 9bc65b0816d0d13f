"""The admin API: the only HTTP way to change the depot's state.

It listens on its own address (`server.admin_listen`, off by default,
typically 127.0.0.1:3143), never on the client port, and every request must
carry `Authorization: Bearer TOKEN` with the token of
`server.admin_token_file` (compared in constant time). It calls the same
functions as the command line:

    POST /mirror/NAME/sync      pkgdepot mirror sync NAME
    POST /snapshot/NAME/tag     pkgdepot snapshot tag NAME WHEN TAG   {"when": ..., "tag": ...}
    POST /snapshot/NAME/untag   pkgdepot snapshot untag NAME TAG     {"tag": ...}
    POST /prune                 pkgdepot snapshot prune [NAME]
                                {"repo": NAME?, "older_than_days": 30, "keep_last": 1,
                                 "grace": 3600}
    POST /gc                    delete unreferenced blobs            {"grace": 3600}
    GET  /                      this list

Answers are JSON; errors are the depot's usual text bodies: 401 without a
token, 403 with a wrong one or from a client outside server.allow_clients.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pkgdepot.errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PkgdepotError,
    Unauthorized,
)
from pkgdepot.ops.adminclient import read_token

if TYPE_CHECKING:
    from pkgdepot.proxy.server import Depot

log = logging.getLogger(__name__)
MAX_BODY = 64 << 10
#: First path segments of the admin API; the client port refuses POSTs to them.
ADMIN_FIRST_SEGMENTS = frozenset({"mirror", "snapshot", "prune", "gc"})
USAGE = {
    "POST /mirror/NAME/sync": "sync a mirror and publish its new state",
    "POST /snapshot/NAME/tag": 'tag a state: {"when": "YYYYMMDDTHHMMSSZ|TAG|latest", '
                               '"tag": "prod-q1"}',
    "POST /snapshot/NAME/untag": 'remove a tag: {"tag": "prod-q1"}',
    "POST /prune": 'remove old untagged states, then unreferenced blobs: {"repo": NAME?, '
                   '"older_than_days": 30, "keep_last": 1, "grace": 3600}',
    "POST /gc": 'delete unreferenced blobs older than grace seconds: {"grace": 3600}',
}


def is_admin_target(target: str) -> bool:
    """Whether a request target on the client port names an admin endpoint."""
    first = target.lstrip("/").split("/", 1)[0].split("?", 1)[0]
    return first in ADMIN_FIRST_SEGMENTS


class Admin:
    """Handles requests on the admin address for one depot process."""

    def __init__(self, depot: Depot, token: bytes) -> None:
        self.depot = depot
        self._token = token
        self._syncing: set[str] = set()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        from pkgdepot.proxy.server import error_response

        try:
            self.depot.check_client(request)
            self._authorize(request.headers.get("Authorization"))
            result = await self._dispatch(request)
            return web.json_response(result, headers={"Cache-Control": "no-store"})
        except PkgdepotError as e:
            resp = error_response(e)
            if isinstance(e, Unauthorized):
                resp.headers["WWW-Authenticate"] = 'Bearer realm="pkgdepot-admin"'
            return resp

    def _authorize(self, header: str | None) -> None:
        scheme, _, given = (header or "").partition(" ")
        if not header or scheme.lower() != "bearer" or not given.strip():
            raise Unauthorized("the admin API needs 'Authorization: Bearer TOKEN'",
                               hint="the token is in the file server.admin_token_file names")
        if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token):
            raise Forbidden("wrong admin token")

    async def _dispatch(self, request: web.BaseRequest) -> dict[str, Any]:
        parts = request.path.strip("/").split("/")
        if parts == [""]:
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed("GET / lists the admin endpoints")
            return {"endpoints": USAGE}
        if request.method != "POST":
            raise MethodNotAllowed(f"{request.path}: the admin API changes state with POST")
        body = await _json_body(request)
        if len(parts) == 3 and parts[0] == "mirror" and parts[2] == "sync":
            return await self._sync(parts[1])
        if len(parts) == 3 and parts[0] == "snapshot" and parts[2] in ("tag", "untag"):
            repo = self._repo(parts[1])
            tag = _field(body, "tag", str)
            if parts[2] == "untag":
                await self.depot.snapshots.untag(repo, tag)
                return {"repository": repo, "untagged": tag}
            snap = await self.depot.snapshots.tag(repo, tag, _field(body, "when", str))
            return {"repository": repo, "tagged": tag, "snapshot": snap.as_dict()}
        if parts == ["prune"]:
            return await self._prune(body)
        if parts == ["gc"]:
            files, size = await self.depot.store.collect_garbage(
                grace=_number(body, "grace", 3600.0))
            return {"blobs_deleted": files, "bytes_freed": size}
        raise NotFound(f"{request.path}: no such admin endpoint",
                       hint="GET / lists them: " + ", ".join(USAGE))

    def _repo(self, name: str) -> str:
        if name not in self.depot.config.repos:
            known = ", ".join(sorted(self.depot.config.repos)) or "none"
            raise NotFound(f"no repository named {name!r} (known: {known})")
        return name

    async def _sync(self, name: str) -> dict[str, Any]:
        from pkgdepot.mirror import run_sync

        repo = self.depot.config.repos.get(self._repo(name))
        if repo is None or repo.mirror is None:
            raise BadRequest(f"repository {name!r} is not a mirror",
                             hint=f"add a [repos.{name}.mirror] table to the configuration")
        if name in self._syncing:
            raise Conflict(f"a sync of {name!r} is already running")
        self._syncing.add(name)
        try:
            result = await run_sync(self.depot.config, name)
        finally:
            self._syncing.discard(name)
        log.info("admin: %s", result.summary())
        return {"repository": name, "summary": result.summary(),
                "snapshot": result.snapshot.as_dict() if result.snapshot else None}

    async def _prune(self, body: dict[str, Any]) -> dict[str, Any]:
        snaps, store = self.depot.snapshots, self.depot.store
        repo = body.get("repo")
        repos = [self._repo(_field(body, "repo", str))] if repo is not None \
            else await snaps.repos()
        cutoff = time.time() - _number(body, "older_than_days", 30.0) * 86400
        keep_last = int(_number(body, "keep_last", 1))
        removed = {r: [s.stamp for s in await snaps.prune(r, cutoff, keep_last)] for r in repos}
        files, size = await store.collect_garbage(grace=_number(body, "grace", 3600.0))
        return {"removed": removed, "blobs_deleted": files, "bytes_freed": size}


class Conflict(PkgdepotError):
    """The same state change is already under way."""

    status = 409


async def _json_body(request: web.BaseRequest) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest(f"request body larger than {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise BadRequest(f"request body larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def _field(body: dict[str, Any], key: str, kind: type[str]) -> str:
    value = body.get(key)
    if not isinstance(value, kind) or not value:
        raise BadRequest(f"the JSON body needs {key!r} (a string)")
    return value


def _number(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadRequest(f"{key!r} must be a number of at least 0")
    return float(value)


async def start(depot: Depot) -> asyncio.AbstractServer | None:
    """Listen on server.admin_listen (if set) with the admin API."""
    config = depot.config
    if not config.admin_listen:
        return None
    from pkgdepot.config import parse_listen

    token = read_token(config)
    host, port = parse_listen("server.admin_listen", config.admin_listen)
    server = web.Server(Admin(depot, token).handle, access_log=None,
                        max_line_size=8190, max_field_size=8190)
    loop = asyncio.get_running_loop()
    try:
        srv = await loop.create_server(server, host, port, reuse_address=True)
    except OSError as e:
        raise PkgdepotError(f"cannot listen on {host}:{port} (server.admin_listen): "
                            f"{e.strerror}") from e
    log.info("admin API on %s:%d", host, port)
    return srv
