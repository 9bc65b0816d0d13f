"""The world a reliability scenario runs in: a signing key, two published
states of a signed apt repository (as two mirrors at different moments would
hold them), upstream servers and a depot on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.depot import DepotProcess
from tests.support.fixtures import require_tools
from tests.support.keys import GpgKey, make_gpg_key
from tests.support.repos import AptRepo, DebSpec, build_apt_repo
from tests.support.upstream import Upstream

PACKAGES = 10
PADDING = 200_000
INDEX = "dists/stable/main/binary-amd64/Packages"


def specs(version: str) -> list[DebSpec]:
    return [DebSpec(f"pkg{i}", version, size_padding=PADDING + 1000 * i)
            for i in range(PACKAGES)]


@dataclass
class Site:
    key: GpgKey
    state_a: AptRepo     # served by mirror A (and normally by every upstream)
    state_b: AptRepo     # a later state: other versions, other indices

    @staticmethod
    def build(work: Path) -> Site:
        key = make_gpg_key(work / "gpg", "pkgdepot reliability")
        a = build_apt_repo(work / "mirror-a" / "debian", key, specs("1.0"))
        b = build_apt_repo(work / "mirror-b" / "debian", key, specs("2.0"))
        return Site(key, a, b)

    def close(self) -> None:
        self.key.close()

    def config(self, *upstreams: Upstream, extra: str = "", upstream: str = "") -> str:
        """The depot's config; `upstream`: more lines for its [upstream] table."""
        urls = ", ".join(f'"{u.url}/debian"' for u in upstreams)
        return ('[upstream]\nallow_networks = ["127.0.0.0/8"]\nread_timeout = 2\n'
                f"connect_timeout = 2\n{upstream}[cache]\nrevalidate_after = 1\nnegative_ttl = 1\n"
                f'[repos.deb]\nupstreams = [{urls}]\nkeyring = "{self.key.public_armored}"\n'
                + extra)


@contextlib.contextmanager
def running(work: Path, site: Site, roots: list[Path], extra: str = "",
            prime: bool = True, upstream: str = ""
            ) -> Iterator[tuple[DepotProcess, list[Upstream]]]:
    """Upstreams for `roots` (each the parent of a debian/ tree) and a depot
    whose named repository `deb` uses them in order; with `prime`, the depot
    has fetched InRelease and Packages, so it knows every package's hash."""
    ups = [Upstream(r).start() for r in roots]
    depot = DepotProcess(work / "depot", site.config(*ups, extra=extra, upstream=upstream))
    try:
        depot.start()
        if prime:
            for path in ("/deb/dists/stable/InRelease", f"/deb/{INDEX}"):
                status, _h, _b = depot.get(path)
                if status != 200:
                    raise RuntimeError(f"priming {path}: HTTP {status}\n{depot.log()}")
        yield depot, ups
    finally:
        depot.stop()
        for u in ups:
            u.stop()


def site_for(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A Site for a module-scoped fixture: `yield from site_for(tmp_path_factory)`."""
    require_tools("gpg", "apt-ftparchive", "dpkg-deb")
    s = Site.build(tmp_path_factory.mktemp("site"))
    yield s
    s.close()
