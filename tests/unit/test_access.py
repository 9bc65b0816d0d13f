"""Who may use the depot: client networks (server.allow_clients) with the
documented default of loopback and the private ranges."""

from __future__ import annotations

import pytest

from pkgdepot.config import PRIVATE_CLIENT_NETWORKS, from_mapping
from pkgdepot.errors import ConfigError, Forbidden
from pkgdepot.proxy.server import Depot


@pytest.fixture
def depot() -> Depot:
    return Depot(from_mapping({}))


def test_default_is_loopback_and_private(depot: Depot) -> None:
    assert [str(n) for n in depot.config.allow_clients] == list(PRIVATE_CLIENT_NETWORKS)


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.9",
                                  "172.31.255.255", "192.168.1.5", "fd00::5", "fe80::1%eth0",
                                  "::ffff:192.168.1.5"])
def test_default_admits(depot: Depot, addr: str) -> None:
    depot._check_address(addr)


@pytest.mark.parametrize("addr", ["8.8.8.8", "172.32.0.1", "100.64.0.1", "169.254.169.254",
                                  "2001:db8::1", "::ffff:8.8.8.8", "0.0.0.0", "::"])
def test_default_refuses(depot: Depot, addr: str) -> None:
    with pytest.raises(Forbidden, match="may not use this depot"):
        depot._check_address(addr)


def test_narrowed_list() -> None:
    depot = Depot(from_mapping({"server": {"allow_clients": ["10.9.0.0/16"]}}))
    depot._check_address("10.9.1.1")
    for addr in ("127.0.0.1", "10.8.1.1", "::1"):
        with pytest.raises(Forbidden):
            depot._check_address(addr)


def test_empty_list_is_refused() -> None:
    with pytest.raises(ConfigError, match="admit no one"):
        from_mapping({"server": {"allow_clients": []}})
