"""cache.max_size: bytes, or a string with a K/M/G/T suffix (powers of 1024)."""

from __future__ import annotations

import pytest

from pkgdepot.config import from_mapping
from pkgdepot.errors import ConfigError


@pytest.mark.parametrize(("raw", "size"), [(0, 0), (123, 123), ("50G", 50 << 30),
                                            ("1.5M", 3 << 19), ("10k", 10240),
                                            ("7 GiB", 7 << 30), ("2T", 2 << 40)])
def test_max_size(raw: object, size: int) -> None:
    assert from_mapping({"cache": {"max_size": raw}}).max_size == size


def test_default_is_no_limit() -> None:
    assert from_mapping({}).max_size == 0


@pytest.mark.parametrize("raw", [-1, "x", True, "5P", "G", 1.5])
def test_bad_max_size_names_the_key(raw: object) -> None:
    with pytest.raises(ConfigError, match=r"cache\.max_size: expected a size") as e:
        from_mapping({"cache": {"max_size": raw}})
    assert e.value.hint and "50G" in e.value.hint
