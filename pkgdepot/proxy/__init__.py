"""The HTTP side of the depot: routing, the server, CONNECT, status and admin."""

from pkgdepot.tls import import_aiohttp

import_aiohttp()  # first: every module here imports aiohttp
