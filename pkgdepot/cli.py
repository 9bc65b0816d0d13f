"""Command line: argv -> config -> command. The only place where errors
become exit codes and messages for people."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from pkgdepot import __version__
from pkgdepot.config import Config, keys_help, load, parse_listen
from pkgdepot.errors import ConfigError, PkgdepotError

log = logging.getLogger("pkgdepot")

DESCRIPTION = """\
pkgdepot: one local depot for the packages of apt, dnf and zypper clients.

It is a caching proxy that clients use as their mirror: the first request for
a file fetches it from upstream, every later one is served from the depot.
Packages are checked against the signed indices that list them before they
are kept."""

SERVE_EPILOG = """\
Clients reach the depot in any of these ways (DEPOT = http://HOST:3142):
  apt proxy:      Acquire::http::Proxy "DEPOT";          (in /etc/apt/apt.conf.d/)
  host in path:   deb DEPOT/mirror.example/debian bookworm main
  named repo:     deb DEPOT/NAME bookworm main           ([repos.NAME] in the config)
  dnf / zypper:   proxy=DEPOT in dnf.conf, or baseurl=DEPOT/NAME/... in a .repo file

Configuration keys (TOML, --config FILE):
"""


def _serve(args: argparse.Namespace) -> int:
    from pkgdepot.proxy.server import serve

    config = _config(args)
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
        config = dataclasses.replace(config, data_dir=Path(args.data_dir))
    return config


def _check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    print(f"configuration is valid: listen {config.listen_host}:{config.listen_port}, "
          f"data in {config.data_dir}, {len(config.repos)} named repositories")
    for r in config.repos.values():
        print(f"  {r.name}: {', '.join(r.upstreams)}" + (f" (keyring {r.keyring})"
                                                        if r.keyring else ""))
    return 0


def _keys(_args: argparse.Namespace) -> int:
    print(keys_help())
    return 0


def build_parser() -> argparse.ArgumentParser:
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

    s = sub.add_parser(
        "serve", parents=[common], help="run the caching proxy (port 3142 by default)",
        description="Run the depot's HTTP server: a caching proxy for apt, dnf and zypper.",
        epilog=SERVE_EPILOG + keys_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--listen", metavar="HOST:PORT",
                   help="address to listen on (overrides server.listen; default 0.0.0.0:3142)")
    s.set_defaults(func=_serve)

    c = sub.add_parser("check-config", parents=[common],
                       help="validate a configuration file and print what it sets up",
                       description="Validate the configuration; exit 2 with the key at fault.")
    c.set_defaults(func=_check_config)

    k = sub.add_parser("config-keys", help="list every configuration key with its meaning",
                       description="List every configuration key, its default and meaning.")
    k.set_defaults(func=_keys)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
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
