"""SIGKILL of the server and of a mirror sync at random moments (30 kills
here; `python -m tests.reliability` runs 120): after each restart every
file served matches its hash and no partial mirror state is published."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.killloop import kill_loop
from tests.reliability.site import Site, site_for


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from site_for(tmp_path_factory)


def test_sigkill_loop_loses_and_corrupts_nothing(site: Site, tmp_path: Path) -> None:
    out = kill_loop(site, tmp_path, kills=30)
    assert out.errors == [], "\n".join(out.errors[:20])
    assert out.kills >= 30 and out.bytes_verified > 0 and out.blobs_verified > 0
    assert "1.0" in out.notes[-1] or "2.0" in out.notes[-1]  # syncs did publish
