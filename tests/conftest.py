"""Shared fixtures: repository builders, the logging upstream, real clients."""

pytest_plugins = ["tests.support.fixtures"]
