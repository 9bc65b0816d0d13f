"""Reusable pytest fixtures for pkgdepot's integration tests.

Load them from ``tests/conftest.py`` with::

    pytest_plugins = ["tests.support.fixtures"]

(or, in a conftest below the top level, ``from tests.support.fixtures import *``).

Fixtures:

* ``package_build_cache`` (session, autouse): one cache of built .deb/.rpm files
  for the whole session (see :func:`tests.support.repos.set_build_cache_dir`).
* ``gpg_key`` (session): a signing :class:`~tests.support.keys.GpgKey`; its agent is
  killed at the end of the session.
* ``other_gpg_key`` (session): a second, unrelated key (for "wrong key" tests).
* ``upstream`` (function): a started :class:`~tests.support.upstream.Upstream` serving
  ``tmp_path / "upstream"`` (build repositories into ``upstream.root``); stopped after.
* ``apt_client``, ``dnf_client``, ``zypper_client`` (function): clients with private
  state under ``tmp_path``.
* ``host_state_guard`` (function): fails the test if the host's package state changed.
* ``require_tools(*names)``: skip unless every program is on PATH.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import hoststate
from tests.support.clients import AptClient, DnfClient, ZypperClient
from tests.support.keys import GpgKey, make_gpg_key
from tests.support.repos import set_build_cache_dir
from tests.support.upstream import Upstream

__all__ = [
    "apt_client",
    "dnf_client",
    "gpg_key",
    "host_state_guard",
    "other_gpg_key",
    "package_build_cache",
    "require_tools",
    "upstream",
    "zypper_client",
]


def require_tools(*names: str) -> None:
    """Skip the calling test unless every named program is installed."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


@pytest.fixture(scope="session", autouse=True)
def package_build_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("pkgcache")
    set_build_cache_dir(path)
    yield path
    set_build_cache_dir(None)


@pytest.fixture(scope="session")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKey]:
    require_tools("gpg", "gpgconf")
    key = make_gpg_key(tmp_path_factory.mktemp("gpg"), "pkgdepot test")
    try:
        yield key
    finally:
        key.close()


@pytest.fixture(scope="session")
def other_gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKey]:
    require_tools("gpg", "gpgconf")
    key = make_gpg_key(tmp_path_factory.mktemp("gpg-other"), "pkgdepot other")
    try:
        yield key
    finally:
        key.close()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    root = tmp_path / "upstream"
    root.mkdir()
    with Upstream(root) as up:
        yield up


@pytest.fixture
def apt_client(tmp_path: Path) -> AptClient:
    require_tools("apt-get", "dpkg")
    return AptClient(tmp_path / "apt-client")


@pytest.fixture
def dnf_client(tmp_path: Path) -> DnfClient:
    require_tools("dnf", "rpm")
    return DnfClient(tmp_path / "dnf-client")


@pytest.fixture
def zypper_client(tmp_path: Path) -> ZypperClient:
    require_tools("zypper", "rpm")
    return ZypperClient(tmp_path / "zypper-client")


@pytest.fixture
def host_state_guard() -> Iterator[hoststate.HostState]:
    before = hoststate.snapshot()
    yield before
    changed = hoststate.diff(before, hoststate.snapshot())
    if changed:
        pytest.fail("host package-manager state changed:\n" + "\n".join(changed))
