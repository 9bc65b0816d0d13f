"""Faults survived, nothing lost or corrupted: upstream faults, mirrors in
different states and clients hanging up, against a real depot on 127.0.0.1
(the scenarios live in tests/reliability; docs/RELIABILITY.md runs them too)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability import catalog, diskfull, faults
from tests.reliability.outcome import Outcome
from tests.reliability.site import Site, site_for
from tests.support.fixtures import require_tools


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from site_for(tmp_path_factory)


def held(out: Outcome) -> None:
    assert out.errors == [], "\n".join(out.errors)
    assert out.requests > 0 and out.bytes_verified > 0 and out.blobs_verified > 0


def test_upstream_faults_never_serve_or_keep_a_wrong_file(site: Site, tmp_path: Path) -> None:
    out = faults.upstream_faults(site, tmp_path)
    held(out)
    # each fault was refused (none of them can yield the right file at once)
    assert out.refused == len(faults.FAULTS), out


def test_transport_faults_without_an_index(site: Site, tmp_path: Path) -> None:
    out = faults.unvouched_faults(site, tmp_path)
    held(out)
    assert out.refused == 4


def test_trickling_upstream_stalls_nobody(site: Site, tmp_path: Path) -> None:
    held(faults.trickle(site, tmp_path))


def test_upstream_slower_than_min_rate_is_aborted_and_failed_over(site: Site,
                                                                   tmp_path: Path) -> None:
    out = faults.slow_loris(site, tmp_path)
    held(out)
    assert out.refused == 1


def test_sigterm_keeps_a_finishing_download(site: Site, tmp_path: Path) -> None:
    out = faults.graceful_shutdown(site, tmp_path)
    held(out)
    assert out.refused == 1  # the download that could not finish in the grace


def test_clients_disconnecting_mid_stream(site: Site, tmp_path: Path) -> None:
    held(faults.client_disconnects(site, tmp_path))


def test_mirrors_in_different_states_are_never_mixed(site: Site, tmp_path: Path) -> None:
    out = faults.mirror_flip(site, tmp_path)
    held(out)


def test_mirror_sync_never_publishes_a_mix(site: Site, tmp_path: Path) -> None:
    out = faults.mirror_sync_flip(site, tmp_path)
    held(out)
    assert out.refused == 1


def test_disk_full_keeps_serving_refuses_misses_and_recovers(site: Site, tmp_path: Path) -> None:
    require_tools("unshare", "mount")
    out = diskfull.disk_full(site, tmp_path)
    held(out)
    assert out.refused == 4  # three misses while full, one download cut by ENOSPC


def test_catalog_locked_or_damaged_then_repaired(site: Site, tmp_path: Path) -> None:
    out = catalog.locked_and_damaged(site, tmp_path)
    assert out.errors == [], "\n".join(out.errors)
    assert out.refused == 3 and out.bytes_verified > 0
