"""Hypothesis settings for the fuzz tests (tests/unit/test_fuzz_*.py).

The default suite runs a moderate number of examples per parser so that it
stays fast; `PKGDEPOT_FUZZ=long` selects a profile with many more examples
for a long run (e.g. nightly), `PKGDEPOT_FUZZ_EXAMPLES=N` sets the number.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

_CHECKS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
           HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("fuzz", max_examples=60, deadline=None,
                          suppress_health_check=_CHECKS)
settings.register_profile("fuzz-long", max_examples=3000, deadline=None,
                          suppress_health_check=_CHECKS)

_profile = "fuzz-long" if os.environ.get("PKGDEPOT_FUZZ") == "long" else "fuzz"
_examples = os.environ.get("PKGDEPOT_FUZZ_EXAMPLES")

#: The decorator every fuzz test uses: ``@fuzz`` under ``@given(...)``.
fuzz = settings(settings.get_profile(_profile),
                **({"max_examples": int(_examples)} if _examples else {}))


@functools.cache
def _base() -> str:
    base = tempfile.mkdtemp(prefix="pkgdepot-fuzz-")
    atexit.register(shutil.rmtree, base, True)
    return base


def scratch() -> tempfile.TemporaryDirectory[str]:
    """A fresh directory for one example, inside one base directory per test
    process: examples do not churn entries directly in /tmp (the client tests'
    namespaces bind-mount every entry of /tmp they list)."""
    return tempfile.TemporaryDirectory(dir=_base())
