"""Settings, declared once.

The table `SETTINGS` is the single source of the configuration file's keys,
their types, defaults and help: the TOML parser validates against it, the
README's key list and `pkgdepot config --help-keys` are generated from it.
Named repositories live under `[repos.NAME]` and are validated separately.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pkgdepot.errors import ConfigError

DEFAULT_PORT = 3142
PRIVATE_CLIENT_NETWORKS = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
    "fe80::/10",
)
REPO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/cache/pkgdepot")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pkgdepot"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    kind: str  # "str" | "int" | "float" | "bool" | "list[str]" | "networks" | "listen" | "size"
    default: Any
    help: str

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"


SETTINGS: tuple[Setting, ...] = (
    Setting("server", "listen", "listen", f"0.0.0.0:{DEFAULT_PORT}",
            "Address and port to listen on, HOST:PORT ([::]:PORT for IPv6)."),
    Setting("server", "data_dir", "str", "",
            "Where blobs and the catalog live (a relative path is taken from the current "
            "directory). Default: /var/cache/pkgdepot as root, else ~/.cache/pkgdepot."),
    Setting("server", "workers", "int", 0,
            "Processes serving clients on the one port (SO_REUSEPORT). One of them fetches "
            "from upstream for all (single flight holds across them); the others serve hits "
            "and hand everything else to it. 0 (the default): 2 on machines with 2 or more "
            "CPUs, else 1 (each process costs about 50 MB; a second one doubles the rate of "
            "hits on 2 cores)."),
    Setting("server", "public_url", "str", "",
            "The URL clients use to reach the depot (e.g. http://depot.example:3142); "
            "used in metadata the depot signs itself (the Snapshots: field)."),
    Setting("server", "allow_clients", "networks", list(PRIVATE_CLIENT_NETWORKS),
            "Client networks (CIDR) that may use the depot. Default: loopback and the "
            "private ranges."),
    Setting("server", "access_log", "str", "",
            'Access log: a file path, "-" for stderr, "" (the default) for none. One line a '
            "request in the combined log format with the cache result (hit, miss...) "
            'appended, or JSON with log_format = "json".'),
    Setting("server", "log_format", "str", "text",
            '"text", or "json" for one JSON object a line in the access log and the '
            "server's own log."),
    Setting("server", "admin_listen", "str", "",
            "HOST:PORT of the admin API (mirror sync, snapshot tag/untag/prune, garbage "
            "collection; POST with a bearer token), typically 127.0.0.1:3143. Default: off. "
            "The client port never changes state."),
    Setting("server", "admin_token_file", "str", "",
            "File holding the admin API's bearer token (one line, at least 16 characters, "
            "readable only by the depot's user). Needed with server.admin_listen."),
    Setting("cache", "revalidate_after", "float", 10.0,
            "Seconds a volatile file (InRelease, Packages, repomd.xml...) is served "
            "without asking upstream again; a burst of clients shares one check."),
    Setting("cache", "negative_ttl", "float", 60.0,
            "Seconds an upstream 404 is remembered before asking again."),
    Setting("cache", "max_size", "size", 0,
            "Largest size of the store in bytes (0: no limit); a string may use K, M, G "
            "or T (powers of 1024), e.g. \"50G\". Above it the server evicts least recently "
            "used cache files, never one a tagged snapshot or a mirror needs."),
    Setting("cache", "allow_unknown_paths", "bool", False,
            "Also cache paths that no format backend recognizes (by default they are "
            "refused: no open proxy)."),
    Setting("upstream", "connect_timeout", "float", 10.0,
            "Seconds to wait for an upstream connection."),
    Setting("upstream", "read_timeout", "float", 60.0,
            "Seconds an upstream may stay silent while sending a file."),
    Setting("upstream", "min_rate", "size", 1024,
            "Slowest upstream transfer tolerated, in bytes a second, averaged over "
            "upstream.min_rate_window: a download that trickles slower is aborted (504; "
            "the next request tries again, on the next upstream if there is one). A "
            "string may use K or M, e.g. \"1K\". 0: no limit (only read_timeout)."),
    Setting("upstream", "min_rate_window", "float", 30.0,
            "Seconds over which upstream.min_rate is measured (a new download gets this "
            "long before it is judged)."),
    Setting("upstream", "allow_hosts", "list[str]", [],
            "If set, the only upstream hosts that /HOST/path and proxy requests may "
            "reach (names, or *.suffix). Named repositories are always allowed."),
    Setting("upstream", "allow_networks", "networks", [],
            "Upstream addresses in loopback, link-local or private ranges are refused "
            "unless listed here (CIDR). Hosts of named repositories are always allowed."),
    Setting("upstream", "allow_connect", "list[str]", [],
            "HOST:PORT pairs that CONNECT may tunnel to (https through the proxy). "
            "Tunnelled bytes are never cached."),
    Setting("upstream", "user_agent", "str", "pkgdepot/0.1",
            "User-Agent sent upstream."),
)

REPO_KEYS: dict[str, str] = {
    "upstreams": "Base URLs, tried in order (failover); http or https.",
    "keyring": "OpenPGP keyring (binary or armored) that must have signed InRelease, "
               "Release.gpg or repomd.xml.asc; metadata that fails is not served.",
    "mirror": "Makes the repository a mirror kept by `pkgdepot mirror sync NAME` (a table, "
              "see [repos.NAME.mirror]); clients are then served only what the last "
              "complete sync published.",
}

MIRROR_KEYS: dict[str, str] = {
    "format": '"apt" or "rpm" (default: "apt" when suites are given, else "rpm").',
    "suites": 'apt: the suites (dists/SUITE) to mirror, e.g. ["bookworm", "bookworm-updates"].',
    "components": 'apt: components (default ["main"]).',
    "architectures": 'apt: architectures (default ["amd64"]); "all" packages always come along.',
    "sources": "apt: also mirror source packages (default false).",
    "udebs": "apt: also mirror debian-installer udebs (default false).",
    "filter": 'Only these packages: names or globs, e.g. ["nginx", "python3-*"]. The depot '
              "then writes and signs the indices itself with its own key (see "
              "`pkgdepot signing-key`).",
    "filter_with_deps": "With filter: also every package the selected ones need, as libsolv "
                        "resolves it (default true).",
    "keep_versions": "Keep only the newest N versions of each package (default: all).",
    "resign": "Write and sign the metadata with the depot's own key even without a filter "
              "(adds a Snapshots: field when server.public_url is set; default false).",
    "index_compressions": 'apt: which compressed forms of each index (Packages, Sources, '
                          "Translation) a sync fetches and serves, of those the Release lists "
                          '(default ["xz", "gz"]: xz, which apt clients ask for first, and gz, '
                          "which the sync reads the package list from, about four times as "
                          "fast as xz). The uncompressed form is always made locally. An index "
                          "listed in none of them is fetched in its smallest form. "
                          '["xz"] saves bytes on a slow or metered link.',
    "concurrency": "Parallel downloads during a sync (default 8).",
    "processes": "Processes that download during a sync: 1, 2, or 0 (default) for a second "
                 "one when there are 1,000 files or more to fetch and 2 or more CPUs. The "
                 "parallel downloads are shared between them.",
    "allow_unsigned": "Sync without a keyring (default false: a mirror needs one).",
}


@dataclass(frozen=True)
class MirrorConfig:
    format: str = "apt"
    suites: tuple[str, ...] = ()
    components: tuple[str, ...] = ("main",)
    architectures: tuple[str, ...] = ("amd64",)
    sources: bool = False
    udebs: bool = False
    concurrency: int = 8
    processes: int = 0
    allow_unsigned: bool = False
    filter: tuple[str, ...] = ()
    filter_with_deps: bool = True
    keep_versions: int | None = None
    resign: bool = False
    index_compressions: tuple[str, ...] = ("xz", "gz")

    @property
    def rewrites(self) -> bool:
        """Whether the depot writes (and signs) the metadata itself."""
        return bool(self.filter) or self.keep_versions is not None or self.resign


@dataclass(frozen=True)
class RepoConfig:
    name: str
    upstreams: tuple[str, ...]
    keyring: Path | None = None
    mirror: MirrorConfig | None = None


@dataclass(frozen=True)
class Config:
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=default_data_dir)
    allow_clients: tuple[Network, ...] = ()
    revalidate_after: float = 10.0
    negative_ttl: float = 60.0
    allow_unknown_paths: bool = False
    max_size: int = 0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    min_rate: int = 1024
    min_rate_window: float = 30.0
    allow_hosts: tuple[str, ...] = ()
    allow_networks: tuple[Network, ...] = ()
    allow_connect: tuple[str, ...] = ()
    user_agent: str = "pkgdepot/0.1"
    public_url: str = ""
    workers: int = 1
    access_log: str = ""
    log_format: str = "text"
    admin_listen: str = ""
    admin_token_file: str = ""
    repos: Mapping[str, RepoConfig] = field(default_factory=dict)


def _as_str(name: str, v: object) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{name}: expected a string, got {type(v).__name__} {v!r}")
    return v


def _as_float(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(f"{name}: expected a number, got {type(v).__name__} {v!r}")
    if v < 0:
        raise ConfigError(f"{name}: must not be negative, got {v!r}")
    return float(v)


def _as_int(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 64:
        raise ConfigError(f"{name}: expected a whole number from 0 to 64, got {v!r}")
    return v


SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def _as_size(name: str, v: object) -> int:
    """Bytes: a whole number, or a string such as "500M" or "50G" (powers of 1024)."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    m = SIZE_RE.match(v) if isinstance(v, str) else None
    if m is None:
        raise ConfigError(f"{name}: expected a size in bytes, got {v!r}",
                          hint='write a number of bytes or e.g. "500M", "50G", "2T"')
    return int(float(m.group(1)) * 1024 ** "_KMGT".index(m.group(2).upper() or "_"))


def _as_bool(name: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{name}: expected true or false, got {v!r}")
    return v


def _as_list(name: str, v: object) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{name}: expected a list of strings, got {v!r}")
    return list(v)


def _as_networks(name: str, v: object) -> tuple[Network, ...]:
    out = []
    for item in _as_list(name, v):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError as e:
            raise ConfigError(f"{name}: {item!r} is not a network in CIDR form ({e})",
                              hint='write e.g. "192.168.0.0/16" or "10.1.2.3/32"') from e
    return tuple(out)


def parse_listen(name: str, v: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)|:?(\d+)", v)
    if not m:
        raise ConfigError(f"{name}: {v!r} is not HOST:PORT", hint='e.g. "0.0.0.0:3142"')
    host = m.group(1) or m.group(3) or "0.0.0.0"
    port = int(m.group(2) or m.group(4) or m.group(5))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}: port {port} is out of range")
    return host, port


CONVERTERS: dict[str, Callable[[str, object], object]] = {
    "str": _as_str,
    "float": _as_float,
    "int": _as_int,
    "size": _as_size,
    "bool": _as_bool,
    "list[str]": _as_list,
    "networks": _as_networks,
}


def _check_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}: {url!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}: {url!r} must not have a query or fragment")
    return url.rstrip("/")


def _parse_repo(name: str, table: object) -> RepoConfig:
    prefix = f"repos.{name}"
    if not REPO_NAME_RE.match(name):
        raise ConfigError(f"{prefix}: a repository name is letters, digits, '-' and '_' "
                          "(at most 64), starting with a letter or digit")
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix}: expected a table [repos.{name}]")
    unknown = set(table) - set(REPO_KEYS)
    if unknown:
        raise ConfigError(f"{prefix}.{sorted(unknown)[0]}: unknown key",
                          hint="known keys: " + ", ".join(REPO_KEYS))
    if "upstreams" not in table:
        raise ConfigError(f"{prefix}.upstreams: missing",
                          hint='e.g. upstreams = ["http://mirror.example/debian"]')
    ups = _as_list(f"{prefix}.upstreams", table["upstreams"])
    if not ups:
        raise ConfigError(f"{prefix}.upstreams: needs at least one URL")
    upstreams = tuple(_check_url(f"{prefix}.upstreams", u) for u in ups)
    keyring = None
    if "keyring" in table:
        # absolute: gpgv runs in a directory of its own
        keyring = Path(_as_str(f"{prefix}.keyring", table["keyring"])).expanduser().absolute()
        if not keyring.is_file():
            raise ConfigError(f"{prefix}.keyring: {keyring} is not a readable file")
    mirror = _parse_mirror(f"{prefix}.mirror", table["mirror"]) if "mirror" in table else None
    if mirror is not None and keyring is None and not mirror.allow_unsigned:
        raise ConfigError(f"{prefix}.keyring: a mirror needs a keyring to check what it syncs",
                          hint="set keyring = \"/path/to/archive-keyring.gpg\" (or "
                               "mirror.allow_unsigned = true, not recommended)")
    return RepoConfig(name=name, upstreams=upstreams, keyring=keyring, mirror=mirror)


#: The compressed forms of an apt index that a mirror can fetch (index_compressions).
INDEX_COMPRESSIONS = ("xz", "gz", "zst", "bz2", "lzma")
NAME_LIST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+/-]*$")
GLOB_RE = re.compile(r"^[A-Za-z0-9*?\[\]][A-Za-z0-9._+*?\[\]-]*$")


def _parse_mirror(prefix: str, table: object) -> MirrorConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix}: expected a table")
    unknown = set(table) - set(MIRROR_KEYS)
    if unknown:
        raise ConfigError(f"{prefix}.{sorted(unknown)[0]}: unknown key",
                          hint="known keys: " + ", ".join(MIRROR_KEYS))
    kw: dict[str, Any] = {}
    for key in ("suites", "components", "architectures", "filter"):
        if key in table:
            items = _as_list(f"{prefix}.{key}", table[key])
            for item in items:
                if not (NAME_LIST_RE.match(item) or (key == "filter" and GLOB_RE.match(item))) \
                    or ".." in item:
                    raise ConfigError(f"{prefix}.{key}: {item!r} is not a valid name")
            kw[key] = tuple(items)
    for key in ("sources", "udebs", "allow_unsigned", "filter_with_deps", "resign"):
        if key in table:
            kw[key] = _as_bool(f"{prefix}.{key}", table[key])
    if "keep_versions" in table:
        n = table["keep_versions"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{prefix}.keep_versions: expected a whole number of at least 1")
        kw["keep_versions"] = n
    if "index_compressions" in table:
        kinds = _as_list(f"{prefix}.index_compressions", table["index_compressions"])
        bad = [k for k in kinds if k not in INDEX_COMPRESSIONS]
        if bad or not kinds:
            raise ConfigError(f"{prefix}.index_compressions: "
                              + (f"{bad[0]!r} is not a compression an index comes in" if bad
                                 else "needs at least one"),
                              hint="choose from " + ", ".join(f'"{k}"' for k in INDEX_COMPRESSIONS))
        kw["index_compressions"] = tuple(dict.fromkeys(kinds))
    if "concurrency" in table:
        n = table["concurrency"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
            raise ConfigError(f"{prefix}.concurrency: expected a whole number from 1 to 64")
        kw["concurrency"] = n
    if "processes" in table:
        n = table["processes"]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 2:
            raise ConfigError(f"{prefix}.processes: expected 0 (automatic), 1 or 2")
        kw["processes"] = n
    fmt = table.get("format", "apt" if kw.get("suites") else "rpm")
    if fmt not in ("apt", "rpm"):
        raise ConfigError(f'{prefix}.format: expected "apt" or "rpm", got {fmt!r}')
    if fmt == "apt" and not kw.get("suites"):
        raise ConfigError(f"{prefix}.suites: an apt mirror needs at least one suite",
                          hint='e.g. suites = ["bookworm"]')
    kw["format"] = fmt
    return MirrorConfig(**kw)


def from_mapping(data: Mapping[str, Any]) -> Config:
    """Validate a parsed TOML document and build the frozen Config."""
    by_section: dict[str, dict[str, Setting]] = {}
    for s in SETTINGS:
        by_section.setdefault(s.section, {})[s.key] = s
    values: dict[str, Any] = {}
    for section, table in data.items():
        if section == "repos":
            continue
        if section not in by_section:
            raise ConfigError(f"{section}: unknown section",
                              hint="sections: " + ", ".join([*by_section, "repos"]))
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: expected a table [{section}]")
        for key, raw in table.items():
            setting = by_section[section].get(key)
            if setting is None:
                raise ConfigError(f"{section}.{key}: unknown key",
                                  hint=f"keys of [{section}]: " + ", ".join(by_section[section]))
            values[setting.name] = raw
    kwargs: dict[str, Any] = {}
    for s in SETTINGS:
        raw = values.get(s.name, s.default)
        if s.kind == "listen":
            kwargs["listen_host"], kwargs["listen_port"] = parse_listen(
                s.name, _as_str(s.name, raw))
            continue
        value = CONVERTERS[s.kind](s.name, raw)
        if s.kind == "list[str]":
            value = tuple(value)  # type: ignore[arg-type]
        if s.key == "data_dir":
            if value:
                kwargs["data_dir"] = data_dir_path(str(value))
            continue
        kwargs[s.key] = value
    if kwargs["workers"] == 0:
        kwargs["workers"] = min(2, len(os.sched_getaffinity(0)))
    if kwargs.get("public_url"):
        kwargs["public_url"] = _check_url("server.public_url", kwargs["public_url"])
    if kwargs["min_rate"] and kwargs["min_rate_window"] < 1:
        raise ConfigError("upstream.min_rate_window: must be at least 1 second, got "
                          f"{kwargs['min_rate_window']!r}",
                          hint="or set upstream.min_rate = 0 to turn the check off")
    if kwargs["log_format"] not in ("text", "json"):
        raise ConfigError(f'server.log_format: expected "text" or "json", '
                          f"got {kwargs['log_format']!r}")
    if kwargs.get("admin_listen"):
        parse_listen("server.admin_listen", kwargs["admin_listen"])
        if not kwargs.get("admin_token_file"):
            raise ConfigError("server.admin_token_file: needed with server.admin_listen",
                              hint="e.g. head -c 32 /dev/urandom | base64 > /etc/pkgdepot/"
                                   "admin-token; chmod 600 it")
    if "server.allow_clients" in values and not kwargs["allow_clients"]:
        raise ConfigError("server.allow_clients: an empty list would admit no one",
                          hint='to admit every client, write ["0.0.0.0/0", "::/0"]')
    for hp in kwargs.get("allow_connect", ()):
        if not re.fullmatch(r"[A-Za-z0-9.-]+:\d+", hp):
            raise ConfigError(f"upstream.allow_connect: {hp!r} is not HOST:PORT")
    repos_table = data.get("repos", {})
    if not isinstance(repos_table, dict):
        raise ConfigError("repos: expected tables [repos.NAME]")
    kwargs["repos"] = {n: _parse_repo(n, t) for n, t in repos_table.items()}
    return Config(**kwargs)


def data_dir_path(value: str) -> Path:
    """The data directory named by the config or by --data-dir: absolute
    (subprocesses such as gpgv run elsewhere), with ~ expanded."""
    return Path(value).expanduser().absolute()


def load(path: Path | None) -> Config:
    """Read and validate a TOML config file; None gives the defaults."""
    if path is None:
        return from_mapping({})
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e})") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    try:
        return from_mapping(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.message}", hint=e.hint) from e


def keys_help() -> str:
    """The list of every config key with its default and meaning (for --help and README)."""
    lines = []
    section = ""
    for s in SETTINGS:
        if s.section != section:
            section = s.section
            lines.append(f"[{section}]")
        default = json.dumps(s.default) if s.default != "" else "(see below)"
        lines.append(f"  {s.key} = {default}\n      {s.help}")
    lines.append("[repos.NAME]")
    for k, h in REPO_KEYS.items():
        lines.append(f"  {k}\n      {h}")
    lines.append("[repos.NAME.mirror]")
    for k, h in MIRROR_KEYS.items():
        lines.append(f"  {k}\n      {h}")
    return "\n".join(lines)
