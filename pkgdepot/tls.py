"""TLS to upstreams: the context https requests carry, and aiohttp imported
without loading a CA bundle it would never use."""

from __future__ import annotations

import os
import ssl
import sys


def client_context() -> ssl.SSLContext:
    """The context of https requests to upstreams: the system's CA
    certificates (or SSL_CERT_FILE / SSL_CERT_DIR), host names checked.
    Blocking: it reads the CA file."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def import_aiohttp() -> None:
    """Import aiohttp without the CA bundle. aiohttp builds two default TLS
    contexts as it is imported, each loading the system's CA file: 35-40 ms
    apiece (a fifth of a short `mirror sync`) and about 1 MB of memory in
    every process. The depot never uses them: every https request carries
    its own context (`client_context`, made when the first one is sent).
    So while aiohttp is imported, OpenSSL is told that the CA file is empty;
    the environment is put back at once. Called before anything imports
    aiohttp: by `pkgdepot.fetch` and `pkgdepot.proxy`."""
    if "aiohttp" in sys.modules:
        return
    saved = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = os.devnull
    try:
        import aiohttp  # noqa: F401
    finally:
        if saved is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = saved
