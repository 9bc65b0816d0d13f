"""Test infrastructure for pkgdepot's integration tests (library code, no tests here).

* :mod:`tests.support.keys`: throw-away gpg signing keys (:func:`make_gpg_key`).
* :mod:`tests.support.repos`: real signed apt and rpm-md repositories
  (:func:`build_apt_repo`, :func:`build_rpm_repo`).
* :mod:`tests.support.upstream`: an HTTP/1.1 file server on 127.0.0.1 with a request log
  and fault injection (:class:`Upstream`).
* :mod:`tests.support.clients`: apt-get, dnf and zypper with private state and a private
  install root (:class:`AptClient`, :class:`DnfClient`, :class:`ZypperClient`).
* :mod:`tests.support.hoststate`: fingerprints of the host's package-manager state.
* :mod:`tests.support.fixtures`: pytest fixtures; load with
  ``pytest_plugins = ["tests.support.fixtures"]`` in tests/conftest.py.
"""
