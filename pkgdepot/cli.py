"""Command line: argv -> config -> command. The only place where errors
become exit codes and messages for people."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pkgdepot import __version__
from pkgdepot.config import Config, data_dir_path, keys_help, load, parse_listen
from pkgdepot.errors import ConfigError, PkgdepotError

if TYPE_CHECKING:
    from pkgdepot.snapshots import Snapshots
    from pkgdepot.store.fs import FsStore

log = logging.getLogger("pkgdepot")

DESCRIPTION = """\
pkgdepot: one local depot for the packages of apt, dnf and zypper clients.

It is a caching proxy that clients use as their mirror: the first request for
a file fetches it from upstream, every later one is served from the depot.
Packages are checked against the signed indices that list them before they
are kept. Named repositories can be mirrors, synced from their signed
metadata; every state of a repository stays reachable as a snapshot, by time
or by tag; and templates or appliances are built straight from package lists.

Start with: pkgdepot serve --help"""

SERVE_EPILOG = """\
Clients reach the depot in any of these ways (DEPOT = http://HOST:3142):
  apt proxy:      Acquire::http::Proxy "DEPOT";          (in /etc/apt/apt.conf.d/)
  host in path:   deb DEPOT/mirror.example/debian bookworm main
  named repo:     deb DEPOT/NAME bookworm main           ([repos.NAME] in the config)
  dnf / zypper:   proxy=DEPOT in dnf.conf, or baseurl=DEPOT/NAME/... in a .repo file

Operating it: the status page is DEPOT/ (repositories, upstream health, hit ratio,
traffic, disk use, snapshots and their diffs, recent errors); Prometheus metrics are
at DEPOT/metrics.

Configuration keys (TOML, --config FILE):
"""


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from pkgdepot.logs import use_log_format
    from pkgdepot.proxy.server import serve

    config = _config(args)
    use_log_format(config.log_format)
    log.info("data directory: %s", config.data_dir)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop=stop)

    asyncio.run(main())
    return 0


def _config(args: argparse.Namespace) -> Config:
    import dataclasses

    config = load(Path(args.config) if args.config else None)
    if getattr(args, "listen", None):
        host, port = parse_listen("--listen", args.listen)
        config = dataclasses.replace(config, listen_host=host, listen_port=port)
    if getattr(args, "data_dir", None):
        config = dataclasses.replace(config, data_dir=data_dir_path(args.data_dir))
    for key in ("access_log", "log_format"):  # serve's --access-log and --log-format
        if getattr(args, key, None) is not None:
            config = dataclasses.replace(config, **{key: getattr(args, key)})
    return config


def _check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    print(f"configuration is valid: listen {config.listen_host}:{config.listen_port}, "
          f"data in {config.data_dir}, {len(config.repos)} named repositories")
    for r in config.repos.values():
        print(f"  {r.name}: {', '.join(r.upstreams)}" + (f" (keyring {r.keyring})"
                                                        if r.keyring else ""))
    return 0


def _with_store(args: argparse.Namespace, fn: Callable[[FsStore, Snapshots, Config],
                                                       Awaitable[int]]) -> int:
    """Open the data directory beside a possibly running server (no recovery
    steps) and run one async command against it."""
    import asyncio

    from pkgdepot.snapshots import Snapshots
    from pkgdepot.store.fs import FsStore

    config = _config(args)
    if not (config.data_dir / "catalog.sqlite").exists():
        raise PkgdepotError(f"no depot data in {config.data_dir}",
                            hint="pass --data-dir DIR (or --config FILE) of the depot")

    async def run() -> int:
        store = FsStore(config.data_dir).open(recover=False)
        try:
            return await fn(store, await Snapshots(store).open(), config)
        finally:
            await store.close()

    return asyncio.run(run())


def _repo_arg(config: Config, name: str) -> str:
    if name not in config.repos:
        known = ", ".join(sorted(config.repos)) or "none"
        raise ConfigError(f"no repository named {name!r} in the configuration (known: {known})",
                          hint="snapshots belong to named repositories: [repos.NAME]")
    return name


def _snapshot(args: argparse.Namespace) -> int:
    action = args.action

    async def run(store: FsStore, snaps: Snapshots, config: Config) -> int:
        if action == "list":
            repos = [_repo_arg(config, args.repo)] if args.repo else await snaps.repos()
            out = {r: [s.as_dict() for s in await snaps.history(r)] for r in repos}
            if args.json:
                print(json.dumps(out, indent=1))
            else:
                for r, items in out.items():
                    print(f"{r}: {len(items)} snapshot(s)")
                    for item in items:
                        tags = " ".join(map(str, item["tags"]))  # type: ignore[call-overload]
                        print(f"  {item['timestamp']}  {item['kind']:<6} {tags}".rstrip())
            return 0
        repo = _repo_arg(config, args.repo)
        if action == "show":
            snap = await snaps.resolve(repo, args.when)
            manifest = await snaps.manifest(repo, snap.id)
            if args.json:
                print(json.dumps({"snapshot": snap.as_dict(), "files": {
                    p: {"sha256": h, "size": n} for p, (h, n) in sorted(manifest.items())}},
                    indent=1))
            else:
                print(f"{repo} {snap.stamp} ({snap.kind}) {' '.join(snap.tags)}".rstrip())
                for p, (h, n) in sorted(manifest.items()):
                    print(f"  {p}  {n} bytes  sha256:{h}")
            return 0
        if action == "tag":
            snap = await snaps.tag(repo, args.tag, args.when)
            print(f"tagged {repo} {snap.stamp} as {args.tag}")
            return 0
        if action == "untag":
            await snaps.untag(repo, args.tag)
            print(f"removed tag {args.tag} of {repo}")
            return 0
        if action == "diff":
            from pkgdepot.diff import diff

            d = await diff(store, snaps, repo, args.a, args.b)
            print(json.dumps(d.as_dict(), indent=1) if args.json else d.text())
            return 0
        raise AssertionError(action)

    return _with_store(args, run)


def _prune(args: argparse.Namespace) -> int:
    async def run(store: FsStore, snaps: Snapshots, config: Config) -> int:
        repos = [_repo_arg(config, args.repo)] if args.repo else await snaps.repos()
        cutoff = time.time() - args.older_than * 86400
        total = 0
        for r in repos:
            removed = await snaps.prune(r, cutoff, args.keep_last)
            total += len(removed)
            for s in removed:
                print(f"removed snapshot {r} {s.stamp}")
        files, size = await store.collect_garbage(grace=args.grace)
        print(f"{total} snapshot(s) removed; {files} unreferenced blob(s) deleted "
              f"({size / 1e6:.1f} MB)")
        return 0

    return _with_store(args, run)


def _mirror_sync(args: argparse.Namespace) -> int:
    config = _config(args)
    names = args.names or sorted(r.name for r in config.repos.values() if r.mirror)
    if not names:
        raise ConfigError("no mirrors in the configuration",
                          hint="add a [repos.NAME.mirror] table")
    if config.admin_listen and not args.in_process:
        from pkgdepot.ops import adminclient

        try:
            return adminclient.sync(config, names)
        except adminclient.Unavailable as e:
            print(f"pkgdepot: no depot answers on server.admin_listen ({e}): syncing in "
                  "this process", file=sys.stderr)
    import asyncio

    from pkgdepot.mirror import Forked, run_sync

    failed = 0
    for name in names:
        forked = Forked.for_sync(config, name)
        try:
            result = asyncio.run(run_sync(config, name, forked))
        except PkgdepotError as e:
            print(f"pkgdepot: {name}: sync failed, nothing published: {e}", file=sys.stderr)
            failed += 1
            continue
        finally:
            if forked is not None:  # unused, or used up: it ends, and is reaped
                forked.discard()
        print(result.summary())
    return 1 if failed else 0


def _signing_key(args: argparse.Namespace) -> int:
    from pkgdepot.signing import SigningKey

    config = _config(args)
    sys.stdout.write(SigningKey(config.data_dir).public_key().decode())
    return 0


def _build(args: argparse.Namespace) -> int:
    from pkgdepot.build import builder
    from pkgdepot.build.tree import load

    template = load(Path(args.template))
    if args.explain:
        print(template.explain(args.set))
        return 0
    suffix = "" if args.format == "dir" else "." + args.format
    out = Path(args.out) if args.out else Path.cwd() / (
        f"{template.distro}-{template.version}-{template.arch}-{args.set}{suffix}")
    cache = Path(args.cache) if args.cache else Path.home() / ".cache" / "pkgdepot-build"
    packages, result = builder.run(
        template, args.set, depot=args.depot, snapshot=args.snapshot,
        lock_in=Path(args.lock) if args.lock else None,
        lock_out=Path(args.write_lock) if args.write_lock else None,
        out=out, cache=cache, appliance_mode=args.appliance, fmt=args.format,
        resolve_only=args.resolve_only)
    print(f"{len(packages)} packages; {result}")
    return 0


def _repair_catalog(args: argparse.Namespace) -> int:
    from pkgdepot.store.repair import repair

    config = _config(args)
    print(repair(config.data_dir, verify_blobs=args.verify_blobs).summary())
    return 0


def _keys(_args: argparse.Namespace) -> int:
    print(keys_help())
    return 0


def _add_serve(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser(
        "serve", parents=[common], help="run the caching proxy (port 3142 by default)",
        description="Run the depot's HTTP server: a caching proxy for apt, dnf and zypper.",
        epilog=SERVE_EPILOG + keys_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--listen", metavar="HOST:PORT",
                   help="address to listen on (overrides server.listen; default 0.0.0.0:3142)")
    s.add_argument("--access-log", metavar="PATH",
                   help='one line per request, with the cache result, to PATH ("-": stderr); '
                        "overrides server.access_log")
    s.add_argument("--log-format", choices=("text", "json"),
                   help="json: access log and server log as one JSON object a line "
                        "(overrides server.log_format)")
    s.set_defaults(func=_serve)


def _add_check_config(sub: Any, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser("check-config", parents=[common],
                       help="validate a configuration file and print what it sets up",
                       description="Validate the configuration; exit 2 with the key at fault.")
    c.set_defaults(func=_check_config)


def _add_snapshot(sub: Any, common: argparse.ArgumentParser) -> None:
    snap = sub.add_parser(
        "snapshot", help="list, show, tag, untag and diff the states of a repository",
        description="Every change of a named repository's metadata is a snapshot, reachable "
                    "as http://DEPOT/snapshot/NAME/WHEN/... where WHEN is YYYYMMDDTHHMMSSZ "
                    "(the newest state not later than that), a tag, or 'latest'.")
    ssub = snap.add_subparsers(dest="action", metavar="ACTION", required=True)
    sl = ssub.add_parser("list", parents=[common], help="snapshots, newest first, with tags")
    sl.add_argument("repo", nargs="?", help="repository name (default: all)")
    sl.add_argument("--json", action="store_true", help="machine-readable output")
    ss = ssub.add_parser("show", parents=[common], help="the files of one snapshot")
    ss.add_argument("repo")
    ss.add_argument("when", help="YYYYMMDDTHHMMSSZ, a tag, or latest")
    ss.add_argument("--json", action="store_true", help="machine-readable output")
    st = ssub.add_parser("tag", parents=[common], help="name a snapshot (e.g. prod-q1)")
    st.add_argument("repo")
    st.add_argument("when", help="YYYYMMDDTHHMMSSZ, an existing tag, or latest")
    st.add_argument("tag", help="the new tag: letters, digits, '.', '_', '-'")
    su = ssub.add_parser("untag", parents=[common], help="remove a tag")
    su.add_argument("repo")
    su.add_argument("tag")
    sd = ssub.add_parser("diff", parents=[common],
                         help="packages added, removed, upgraded, downgraded from A to B")
    sd.add_argument("repo")
    sd.add_argument("a", help="the older state: YYYYMMDDTHHMMSSZ, a tag, or latest")
    sd.add_argument("b", help="the newer state")
    sd.add_argument("--json", action="store_true", help="machine-readable output")
    sp = ssub.add_parser(
        "prune", parents=[common], help="remove old untagged snapshots, then unused blobs",
        description="Remove untagged snapshots older than --older-than days (keeping the "
                    "newest --keep-last), then delete blobs that no snapshot and no cache entry "
                    "references. Safe while the server and a sync run.")
    sp.add_argument("repo", nargs="?", help="repository name (default: all)")
    sp.add_argument("--older-than", type=float, default=30.0, metavar="DAYS",
                    help="retention in days (default 30)")
    sp.add_argument("--keep-last", type=int, default=1, metavar="N",
                    help="always keep the newest N snapshots (default 1)")
    sp.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                    help="never delete a blob younger than this (default 3600)")
    for action_parser in (sl, ss, st, su, sd):
        action_parser.set_defaults(func=_snapshot)
    sp.set_defaults(func=_prune)


def _add_mirror(sub: Any, common: argparse.ArgumentParser) -> None:
    m = sub.add_parser("mirror", help="keep mirrors current from their signed metadata",
                       description="Mirrors are named repositories with a [repos.NAME.mirror] "
                                   "table.")
    msub = m.add_subparsers(dest="action", metavar="ACTION", required=True)
    ms = msub.add_parser(
        "sync", parents=[common], help="sync mirrors and publish their new state",
        description="Check the signed release file against the keyring, download what the "
                    "store lacks (each file checked against its index), then publish the new "
                    "state atomically as a snapshot. Clients keep getting the previous state "
                    "until then. An interrupted sync publishes nothing and resumes where it "
                    "stopped. Exit status 1 if any mirror failed. With server.admin_listen "
                    "set and a depot listening there, the depot does the sync (it serves "
                    "the mirror; this command only waits for its answer).")
    ms.add_argument("names", nargs="*", metavar="NAME", help="mirrors to sync (default: all)")
    ms.add_argument("--in-process", action="store_true",
                    help="sync in this process even when a depot listens on "
                         "server.admin_listen")
    ms.set_defaults(func=_mirror_sync)


def _add_build(sub: Any, common: argparse.ArgumentParser) -> None:
    b = sub.add_parser(
        "build", help="OS templates and appliances straight from package lists",
        description="Build from a template tree TREE/DISTRO/VERSION/ARCH (config/ directories "
                    "at any level; SET.list files merge down the tree, a trailing '-' removes "
                    "an inherited package, name=version pins; build.toml names the family, "
                    "the depot and the repositories). Packages are resolved with libsolv and "
                    "fetched through the depot.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("template", help="TREE/DISTRO/VERSION/ARCH")
    b.add_argument("--set", default="default", help="the package set (SET.list), default "
                                                     "'default'")
    b.add_argument("--explain", action="store_true",
                   help="print the merged template and where each line came from; build "
                        "nothing")
    b.add_argument("--appliance", action="store_true",
                   help="only unpack the resolved packages (no scripts, no chroot) and write "
                        "a manifest of packages, files and config files")
    b.add_argument("--out", metavar="PATH", help="output directory, or file for a tarball")
    from pkgdepot.build.pack import FORMATS

    b.add_argument("--format", default="dir", choices=FORMATS,
                   help="a directory, or a tarball; with SOURCE_DATE_EPOCH set, two builds "
                        "from the same lock give byte-identical tarballs")
    b.add_argument("--lock", metavar="FILE", help="build exactly the packages of this lock file")
    b.add_argument("--write-lock", metavar="FILE",
                   help="write the resolution (name, version, arch, sha256 and size of "
                        "every package), then build (unless --resolve-only)")
    b.add_argument("--resolve-only", action="store_true",
                   help="with --write-lock: resolve and write the lock, build nothing")
    b.add_argument("--snapshot", metavar="WHEN", help="resolve against a depot snapshot "
                                                      "(YYYYMMDDTHHMMSSZ or a tag)")
    b.add_argument("--depot", metavar="URL", help="the depot (overrides build.toml)")
    b.add_argument("--cache", metavar="DIR", help="where downloaded packages are kept")
    b.set_defaults(func=_build)


def _add_signing_key(sub: Any, common: argparse.ArgumentParser) -> None:
    sk = sub.add_parser(
        "signing-key", parents=[common], help="print the depot's public signing key",
        description="Print the public key with which the depot signs the metadata it writes "
                    "itself (filtered mirrors); it is created on first use. Clients trust it "
                    "like any archive key: save it as /etc/apt/keyrings/pkgdepot.asc and use "
                    "[signed-by=/etc/apt/keyrings/pkgdepot.asc], or gpgkey=file://... in a "
                    ".repo file.")
    sk.set_defaults(func=_signing_key)


def _add_repair_catalog(sub: Any, common: argparse.ArgumentParser) -> None:
    rc = sub.add_parser(
        "repair-catalog", parents=[common], help="rebuild a damaged catalog from what is left",
        description="Stop the depot first. Moves the catalog (catalog.sqlite) aside as "
                    "catalog.sqlite.damaged-TIME and writes a new one with every row that can "
                    "still be read: cached entries with an intact blob, what indices vouch "
                    "for, and snapshots whose every file is in the store. Cached files it "
                    "no longer names are fetched again on demand; run `pkgdepot mirror sync` "
                    "afterwards to publish mirrors again (packages already in the store are "
                    "not downloaded again).")
    rc.add_argument("--verify-blobs", action="store_true",
                    help="also hash every blob and remove those that do not match their name")
    rc.set_defaults(func=_repair_catalog)


def _add_keys(sub: Any, common: argparse.ArgumentParser) -> None:
    k = sub.add_parser("config-keys", help="list every configuration key with its meaning",
                       description="List every configuration key, its default and meaning.")
    k.set_defaults(func=_keys)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. With `command` (the first word of the arguments
    that is not an option), only that command is set up if it is one:
    parsing its arguments needs no other, and setting up all twenty
    parsers cost every command 10 ms."""
    p = argparse.ArgumentParser(prog="pkgdepot", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"pkgdepot {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE",
                        help="TOML configuration file (default: none; built-in defaults)")
    common.add_argument("--data-dir", metavar="DIR",
                        help="where blobs and the catalog live (overrides server.data_dir)")

    from pkgdepot.ops import commands

    adders: dict[str, Callable[[Any, argparse.ArgumentParser], None]] = {
        "serve": _add_serve, "check-config": _add_check_config,
        "snapshot": _add_snapshot, "mirror": _add_mirror, "build": _add_build,
        "signing-key": _add_signing_key, "repair-catalog": _add_repair_catalog,
        **commands.parsers(_with_store), "config-keys": _add_keys}
    for name, add in adders.items():
        if command not in adders or name == command:
            add(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # the top level's options take no value: the first other word is the command
    parser = build_parser(next((w for w in words if not w.startswith("-")), None))
    args = parser.parse_args(words)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # libarchive-c says at INFO, on every import, that it cannot change entry digests
    logging.getLogger("libarchive").setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.func is not _serve:
        # A command that ends soon: the cyclic collector runs less often (as
        # mypy's does). Loading the modules of a sync set it off dozens of
        # times, 10-20 ms of a small sync; the server keeps the default.
        gc.set_threshold(100_000, 50, 50)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"pkgdepot: configuration error: {e}", file=sys.stderr)
        return 2
    except PkgdepotError as e:
        print(f"pkgdepot: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """The `pkgdepot` command: `main`, then a quick exit. Everything a
    command opens it has closed by now, so the interpreter's teardown (which
    frees every loaded module's objects, 50-60 ms after a `mirror sync`, a
    sixth of a small one) is skipped: buffered output is flushed and the
    process ends."""
    code = main()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)  # a profiler or coverage writes its results at exit
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a closed pipe (`pkgdepot ... | head`)
            stream.flush()
    os._exit(code)
