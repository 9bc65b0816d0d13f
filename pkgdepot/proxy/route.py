"""Routing: a request target -> (cache key, upstream URLs, kind of file).

Accepted forms:
    GET http://HOST[:PORT]/PATH      forward proxy (absolute form)
    GET /HOST[:PORT]/PATH            upstream host in the path (apt-cacher-ng style)
    GET /NAME/PATH                   a named repository from the config
    GET /, /metrics, /_pkgdepot/...  the depot's own pages (status, metrics)

The path is checked strictly (no traversal in any encoding, no NUL, no
backslash, no empty segments) before it is decoded, and again after.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from pkgdepot.config import Config, RepoConfig
from pkgdepot.errors import BadRequest, Forbidden, NotFound
from pkgdepot.formats import Backend, Kind, PathInfo, Role, classify, loaded_backends
from pkgdepot.store import repo_key

HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
IPV6_RE = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
QUERY_OK_RE = re.compile(r"(^|/)(metalink|mirrorlist)$")
#: Characters kept literally when a decoded path is sent upstream.
SAFE = "/:@!$&'()*+,;=-._~"
MEMO_SIZE = 2048  # routes remembered (hot paths); cleared when full: each costs ~0.8 KB
#: First segments of the depot's own pages. A repository name cannot start
#: with "_"; one named "metrics" hides /metrics (then use /_pkgdepot/metrics).
OWN_FIRST_SEGMENTS = {"metrics", "_pkgdepot"}


def _is_ipv6(host: str) -> bool:
    """A plain IPv6 literal (no brackets, no zone index such as %eth0)."""
    if "%" in host or not IPV6_RE.match(f"[{host}]"):
        return False
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def is_authority(segment: str) -> bool:
    """HOST, HOST:PORT, IPv4[:PORT] or [IPv6][:PORT], with a dot or a port so
    that it cannot be mistaken for a repository name."""
    host, port = segment, ""
    if segment.startswith("["):
        host, _, rest = segment.partition("]")
        host += "]"
        if rest:
            if not rest.startswith(":"):
                return False
            port = rest[1:]
        if not _is_ipv6(host[1:-1]):
            return False
    else:
        if ":" in segment:
            host, _, port = segment.rpartition(":")
        if not HOSTNAME_RE.match(host) or ("." not in host and not port):
            return False
    return not port or (port.isdigit() and 0 < int(port) < 65536)


@dataclass(frozen=True, slots=True)
class Route:
    key: str                 # cache key: "repo/NAME/PATH" or "http/HOST[:PORT]/PATH"
    path: str                # decoded path within the repository or upstream host
    urls: tuple[str, ...]    # upstream URLs, tried in order
    repo: RepoConfig | None
    backend: Backend | None  # None only when unknown paths are allowed
    info: PathInfo
    origin: str              # what metrics count it under: the repository name or HOST[:PORT]

    @property
    def kind(self) -> Kind:
        return self.info.kind


@dataclass(frozen=True, slots=True)
class OwnPage:
    """One of the depot's own pages: "" (the status page), "metrics" or
    "_pkgdepot/..." (the path without its leading '/')."""

    path: str


@dataclass(frozen=True, slots=True)
class SnapshotRoute:
    """/snapshot/NAME/ (the index of states) or /snapshot/NAME/WHEN/PATH."""

    repo: RepoConfig
    when: str | None            # None: the index
    inner: Route | None         # the route of PATH in the live repository
    index_name: str = ""        # "" or "releases.txt" / "index.json"


UNKNOWN = PathInfo("unknown", Kind.VOLATILE, Role.OTHER_VOLATILE)


CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\\]")
BAD_ESCAPE_RE = re.compile(r"%(00|2f|5c|0d|0a|09|7f)", re.IGNORECASE)


def check_raw_path(raw: str) -> None:
    """Refuse hostile paths before decoding anything."""
    if CONTROL_RE.search(raw):
        raise BadRequest("control characters or backslashes in the path")
    if "%" in raw:
        m = BAD_ESCAPE_RE.search(raw)
        if m:
            raise BadRequest(f"encoded %{m.group(1).upper()} in the path is not allowed")


def decode_path(raw_path: str) -> str:
    """Decode a raw path ('/a/b%3a1') into checked segments ('a/b:1')."""
    check_raw_path(raw_path)
    if not raw_path.startswith("/"):
        raise BadRequest("the path must start with '/'")
    try:
        path = unquote(raw_path[1:], errors="strict")
    except UnicodeDecodeError as e:
        raise BadRequest("the path is not valid UTF-8 once decoded") from e
    if CONTROL_RE.search(path):
        raise BadRequest("control characters or backslashes in the path")
    if path == "":
        return path
    body = path[:-1] if path.endswith("/") else path
    if "//" in body or body.startswith("/") or body.endswith("/") or (
            "." in body and any(seg in (".", "..") for seg in body.split("/"))):
        raise BadRequest("empty, '.' or '..' path segments are not allowed")
    return path


class Router:
    def __init__(self, config: Config) -> None:
        self.config = config
        # Longest base first, so that a more specific upstream wins.
        self._bases: list[tuple[str, RepoConfig]] = sorted(
            ((u + "/", r) for r in config.repos.values() for u in r.upstreams),
            key=lambda t: -len(t[0]))
        self._memo: dict[str, Route | SnapshotRoute | OwnPage] = {}
        self._self_names = {"localhost", "127.0.0.1", "::1", socket.gethostname().lower(),
                            socket.getfqdn().lower()}
        if config.listen_host not in ("0.0.0.0", "::"):
            self._self_names.add(config.listen_host.lower())
        loaded_backends()  # now, not on the first request

    def route(self, target: str) -> Route | SnapshotRoute | OwnPage:
        """Route a request target. Routes are pure functions of the target and
        the (frozen) config, so they are memoized."""
        found = self._memo.get(target)
        if found is not None:
            return found
        route = self._route(target)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[target] = route
        return route

    def _route(self, target: str) -> Route | SnapshotRoute | OwnPage:
        if len(target) > 4096:
            raise BadRequest("request target too long")
        check_raw_path(target)
        if target.startswith(("http://", "https://")):
            return self._absolute(target)
        if not target.startswith("/"):
            raise BadRequest("request target must be a path or an absolute http:// URL")
        raw_path, _, query = target.partition("?")
        path = decode_path(raw_path)
        first, _, rest = path.partition("/")
        if first in self.config.repos:
            repo = self.config.repos[first]
            return self._named(repo, rest, query)
        if first == "snapshot":
            return self._snapshot(rest, query)
        if path == "" or first in OWN_FIRST_SEGMENTS:
            if query:
                raise BadRequest("the depot's own pages take no query string")
            return OwnPage(path)
        if is_authority(first):
            return self._host("http", first, rest, query)
        names = ", ".join(sorted(self.config.repos)) or "none configured"
        raise NotFound(f"no repository named {first!r} (named repositories: {names}); "
                       "to reach an upstream host, put its name with a dot in the first "
                       "segment, e.g. /mirror.example/debian/...")

    def _snapshot(self, rest: str, query: str) -> SnapshotRoute:
        name, _, tail = rest.partition("/")
        repo = self.config.repos.get(name)
        if repo is None:
            names = ", ".join(sorted(self.config.repos)) or "none configured"
            raise NotFound(f"no repository named {name!r} (named repositories: {names})")
        if tail in ("", "releases.txt", "index.json"):
            return SnapshotRoute(repo, None, None, tail)
        when, _, path = tail.partition("/")
        return SnapshotRoute(repo, when, self._named(repo, path, query))

    def _absolute(self, target: str) -> Route | SnapshotRoute | OwnPage:
        try:
            parts = urlsplit(target)
            port = parts.port
        except ValueError as e:
            raise BadRequest(f"malformed URL: {e}") from e
        if parts.username or parts.password or "@" in parts.netloc:
            raise BadRequest("user information in the URL is not allowed")
        if parts.fragment:
            raise BadRequest("fragments are not allowed")
        host = (parts.hostname or "").lower()
        if not host or not (HOSTNAME_RE.match(host) or _is_ipv6(host)):
            raise BadRequest("malformed host in the URL")
        if (parts.scheme == "http" and (port or 80) == self.config.listen_port
                and host in self._self_names):
            # A client whose proxy is the depot, asking for a depot URL: serve it
            # as if asked directly.
            return self._route((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        path = decode_path(parts.path or "/")
        full = f"{parts.scheme}://{parts.netloc.lower()}/{path}"
        for base, repo in self._bases:
            if full.startswith(base):
                return self._named(repo, full[len(base):], parts.query)
        authority = host if ":" not in host else f"[{host}]"
        if port is not None and port != (80 if parts.scheme == "http" else 443):
            authority += f":{port}"
        return self._host(parts.scheme, authority, path, parts.query)

    def _classify(self, path: str, query: str) -> tuple[Backend | None, PathInfo]:
        if query and not QUERY_OK_RE.search(path):
            raise BadRequest("query strings are only allowed on metalink and mirrorlist")
        if path == "" or path.endswith("/"):
            raise Forbidden("directory listings are not served")
        found = classify(path)
        if found is None:
            if self.config.allow_unknown_paths:
                return None, UNKNOWN
            raise Forbidden(f"/{path} is not a file of any known repository format "
                            "(apt, rpm-md): refused, the depot is not an open proxy",
                            hint="set cache.allow_unknown_paths = true to cache it anyway")
        return found

    def _named(self, repo: RepoConfig, path: str, query: str) -> Route:
        backend, info = self._classify(path, query)
        suffix = quote(path, safe=SAFE) + (f"?{query}" if query else "")
        key = repo_key(repo.name, path) + (f"?{query}" if query else "")
        return Route(key, path, tuple(f"{u}/{suffix}" for u in repo.upstreams),
                     repo, backend, info, repo.name)

    def _host(self, scheme: str, authority: str, path: str, query: str) -> Route:
        full = f"{scheme}://{authority.lower()}/{path}"
        for base, repo in self._bases:
            if full.startswith(base):  # a named repository's upstream: share its cache
                return self._named(repo, full[len(base):], query)
        backend, info = self._classify(path, query)
        suffix = quote(path, safe=SAFE) + (f"?{query}" if query else "")
        key = f"{scheme}/{authority.lower()}/{path}" + (f"?{query}" if query else "")
        return Route(key, path, (f"{scheme}://{authority}/{suffix}",), None, backend, info,
                     authority.lower())
