"""CONNECT: https through the proxy. Refused unless the target HOST:PORT is
listed in `upstream.allow_connect`; tunnelled bytes pass through untouched
and are never cached (the depot cannot see inside TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

from aiohttp import web

from pkgdepot.config import Config
from pkgdepot.errors import BadRequest, Forbidden, UpstreamError
from pkgdepot.fetch import UpstreamPolicy

log = logging.getLogger(__name__)


async def handle_connect(request: web.BaseRequest, config: Config,
                         policy: UpstreamPolicy) -> web.StreamResponse:
    target = request.raw_path
    host, sep, port_s = target.rpartition(":")
    if not sep or not port_s.isdigit() or not host:
        raise BadRequest("CONNECT needs HOST:PORT")
    if target.lower() not in {t.lower() for t in config.allow_connect}:
        raise Forbidden(
            f"CONNECT to {target} refused: the depot caches plain http only, and a tunnel "
            "would pass https traffic by uncached",
            hint="point the client at http:// URLs through the depot (clients still check "
                 "signatures), or list this HOST:PORT in upstream.allow_connect")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host.strip("[]"), int(port_s))
    except OSError as e:
        raise UpstreamError(f"cannot resolve {host}: {e}") from e
    addrs = [str(i[4][0]) for i in infos]
    allowed = [a for a in addrs if policy.address_allowed(host, a, int(port_s))]
    if not allowed:
        raise Forbidden(f"CONNECT to {host} refused: it resolves to an internal address",
                        hint="list its network in upstream.allow_networks if intended")
    ipaddress.ip_address(allowed[0])
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(allowed[0], int(port_s)), config.connect_timeout)
    except (OSError, TimeoutError) as e:
        raise UpstreamError(f"CONNECT to {target} failed: {e}") from e
    transport = request.transport
    if transport is None:
        writer.close()
        raise UpstreamError("client went away")
    transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    closed = asyncio.Event()
    feeder = _Feeder(writer, transport, closed)
    request.protocol.set_parser(feeder)  # type: ignore[arg-type]

    async def upstream_to_client() -> None:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            transport.write(data)

    down = asyncio.create_task(upstream_to_client())
    try:
        await asyncio.wait([down, asyncio.create_task(closed.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if not down.done():  # the client finished sending: let the answer drain
            await asyncio.wait_for(down, config.read_timeout)
    except (OSError, TimeoutError) as e:
        log.debug("tunnel to %s ended: %s", target, e)
    finally:
        down.cancel()
        writer.close()
        transport.close()
    raise asyncio.CancelledError  # the connection is finished; nothing more to send


class _Feeder:
    """Takes the client's bytes from aiohttp's protocol (as its payload parser)
    and writes them to the upstream connection."""

    def __init__(self, writer: asyncio.StreamWriter, client: asyncio.BaseTransport,
                 closed: asyncio.Event) -> None:
        self._writer = writer
        self._client = client
        self._closed = closed

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if not self._writer.is_closing():
            self._writer.write(data)
        return False, b""

    def feed_eof(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            if self._writer.can_write_eof():
                self._writer.write_eof()
        self._closed.set()
