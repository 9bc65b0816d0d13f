"""Command-line parsers of the operator commands: gc, verify, import,
client-config. `cli.py` calls `parsers`; the work is in the sibling modules."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pkgdepot.config import Config

if TYPE_CHECKING:
    from pkgdepot.snapshots import Snapshots
    from pkgdepot.store.fs import FsStore

StoreCommand = Callable[["FsStore", "Snapshots", Config], Awaitable[int]]
WithStore = Callable[[argparse.Namespace, StoreCommand], int]
AddParser = Callable[[Any, argparse.ArgumentParser], None]


def parsers(with_store: WithStore) -> dict[str, AddParser]:
    """For each command, what adds it to `sub` (argparse subparsers, with
    `common` options); `with_store(args, fn)` opens the data directory
    beside a possibly running server and runs fn."""

    def store_command(fn: Callable[[argparse.Namespace, FsStore, Config], Awaitable[int]]
                      ) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            async def go(store: FsStore, _snaps: Snapshots, config: Config) -> int:
                return await fn(args, store, config)
            return with_store(args, go)
        return run

    def add_gc(sub: Any, common: argparse.ArgumentParser) -> None:
        g = sub.add_parser(
            "gc", parents=[common], help="delete unreferenced blobs, enforce cache.max_size",
            description="Delete blobs that no cache entry and no snapshot references (older than "
                        "--grace), then, if the store is larger than cache.max_size, evict least "
                        "recently used cache files (never one a tagged snapshot or a mirror "
                        "needs). The server does the eviction by itself; this is for running it "
                        "now. Safe while the server and a sync run.")
        g.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                       help="never delete an unreferenced blob younger than this (default 3600); "
                            "files used within min(SECONDS, 60) are not evicted either")
        g.set_defaults(func=store_command(_gc))

    def add_verify(sub: Any, common: argparse.ArgumentParser) -> None:
        v = sub.add_parser(
            "verify", parents=[common], help="re-hash every blob; report (or --repair) damage",
            description="Read every blob of the store and check it against the sha256 it is "
                        "named by; also report cache entries without an intact blob. Exit status "
                        "1 if anything is wrong (0 after a successful --repair).")
        v.add_argument("--repair", action="store_true",
                       help="delete bad blobs and the cache entries that use them, so that the "
                            "next request fetches a good copy from upstream")
        v.set_defaults(func=store_command(_verify))

    def add_import(sub: Any, common: argparse.ArgumentParser) -> None:
        i = sub.add_parser(
            "import", parents=[common], help="add existing .deb/.rpm files to the store",
            description="Add the .deb/.udeb/.rpm files under DIR (an old apt-cacher-ng cache, "
                        "/var/cache/apt/archives) to the store, keeping only those that an index "
                        "the depot has already seen lists with the same hash. DIR is only read.")
        i.add_argument("directory", metavar="DIR")
        i.set_defaults(func=store_command(_import))

    def add_client_config(sub: Any, common: argparse.ArgumentParser) -> None:
        c = sub.add_parser(
            "client-config", help="print or install apt/dnf/zypper configuration for the depot",
            description="Print (default) or --install the configuration that makes a machine's "
                        "package manager use the depot. Without --repo, the machine's own "
                        "repositories go through it (apt: proxy in apt.conf.d; dnf: proxy= in "
                        "each .repo; zypper: http baseurls rewritten to DEPOT/HOST/PATH). With "
                        "--repo NAME, a repository file for the depot's named repository replaces "
                        "the existing ones. Replaced files are kept with a .disabled suffix; "
                        "--undo restores them exactly.")
        c.add_argument("tool", choices=("apt", "dnf", "zypper"))
        c.add_argument("--depot", required=True, metavar="URL", help="e.g. http://depot:3142")
        c.add_argument("--repo", metavar="NAME", help="a named repository of the depot")
        c.add_argument("--root", default="/", metavar="DIR",
                       help="the machine's root directory (default /)")
        c.add_argument("--suite", action="append", default=[], metavar="SUITE",
                       help="apt --repo: a suite to use (repeat for several)")
        c.add_argument("--component", action="append", default=[], metavar="NAME",
                       help="apt --repo: a component (repeat; default main)")
        c.add_argument("--signed-by", metavar="KEYRING", help="apt --repo: Signed-By keyring")
        c.add_argument("--gpgkey", metavar="URL",
                       help="dnf/zypper --repo: key that signs the metadata (repo_gpgcheck=1)")
        c.add_argument("--unsigned-packages", action="store_true",
                       help="dnf/zypper --repo: the packages themselves carry no signature")
        mode = c.add_mutually_exclusive_group()
        mode.add_argument("--install", action="store_true", help="write the files under --root")
        mode.add_argument("--undo", action="store_true",
                          help="remove what --install wrote and restore the disabled files")
        c.set_defaults(func=_client_config)

    return {"gc": add_gc, "verify": add_verify, "import": add_import,
            "client-config": add_client_config}


async def _gc(args: argparse.Namespace, store: FsStore, config: Config) -> int:
    from pkgdepot.ops.gc import collect

    print((await collect(store, config, args.grace)).summary())
    return 0


async def _verify(args: argparse.Namespace, store: FsStore, config: Config) -> int:
    from pkgdepot.ops.verify import verify

    result = await verify(store, repair=args.repair)
    print(result.report())
    return 0 if result.ok or result.repaired else 1


async def _import(args: argparse.Namespace, store: FsStore, config: Config) -> int:
    from pkgdepot.ops.importer import import_dir

    print((await import_dir(store, Path(args.directory))).report())
    return 0


def _client_config(args: argparse.Namespace) -> int:
    from pkgdepot.ops import clientconfig as cc

    root = Path(args.root)
    if args.undo:
        print("\n".join(cc.undo(root)))
        return 0
    opts = cc.Options(args.tool, args.depot, args.repo, tuple(args.suite),
                      tuple(args.component) or ("main",), args.signed_by, args.gpgkey,
                      args.unsigned_packages)
    p = cc.plan(opts, root)
    if args.install:
        print("\n".join(cc.install(p, root)))
    else:
        print(p.text(root))
    return 0
