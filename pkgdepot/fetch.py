"""The one upstream client: one aiohttp session, explicit timeouts, redirects
followed by hand so that every hop passes the upstream policy (no requests
to the depot host's own loopback, link-local or private networks unless the
configuration allows them)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from pkgdepot.tls import client_context, import_aiohttp

import_aiohttp()  # before anything below imports it

import aiohttp  # noqa: E402
from aiohttp.abc import AbstractResolver, ResolveResult  # noqa: E402
from aiohttp.resolver import DefaultResolver  # noqa: E402

from pkgdepot.config import Config, Network  # noqa: E402
from pkgdepot.errors import Forbidden, UpstreamError, UpstreamTimeout  # noqa: E402

log = logging.getLogger(__name__)
MAX_REDIRECTS = 5
#: Bytes the event loop takes from an upstream socket at once while a large
#: body arrives (asyncio's own default is 256 KiB). A loop that also serves
#: many clients gets round to the socket less often: taking 256 KiB a turn,
#: it fell behind a 100 MB/s upstream, whose transfer then stretched (16
#: clients on one cold 100 MB file: the depot's upstream transfer took 1.024x
#: a plain fetch's time, median of 44 runs, against 0.989x with 1 MiB, of 34).
LARGE_READ = 1 << 20


def is_internal(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Addresses that an outside URL must never make the depot connect to:
    everything not globally routable (loopback, link-local, private, shared,
    reserved, unspecified) and multicast; IPv4-mapped IPv6 counts as IPv4."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not addr.is_global or addr.is_multicast


class UpstreamPolicy:
    """Which upstream hosts and addresses the depot may connect to."""

    def __init__(self, config: Config) -> None:
        self.allow_networks: tuple[Network, ...] = config.allow_networks
        # Upstreams of named repositories are trusted by host and port alike:
        # the operator configured them, even on loopback.
        self.trusted = {_netloc(u) for r in config.repos.values() for u in r.upstreams}
        self.trusted_hosts = {h for h, _p in self.trusted}
        self.allow_hosts = tuple(h.lower() for h in config.allow_hosts)
        #: origins (the URL up to its path) that passed check_url: a sync asks
        #: for thousands of files of one origin
        self._passed: set[str] = set()

    def host_allowed(self, host: str) -> bool:
        """The name-based allowlist (`upstream.allow_hosts`); empty allows all."""
        host = host.lower()
        if host in self.trusted_hosts or not self.allow_hosts:
            return True
        for pat in self.allow_hosts:
            if pat.startswith("*.") and (host.endswith(pat[1:]) or host == pat[2:]):
                return True
            if host == pat:
                return True
        return False

    def address_allowed(self, host: str, addr: str, port: int | None = None) -> bool:
        if (host.lower(), port) in self.trusted:
            return True
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
        if any(ip in n for n in self.allow_networks):
            return True
        return not is_internal(ip)

    def check_url(self, url: str) -> None:
        slash = url.find("/", url.find("://") + 3)
        origin = url[:slash] if slash > 0 else url  # decides scheme, host and port
        if origin in self._passed:
            return
        self._check_url(url)
        if len(self._passed) >= 4096:  # many hosts through the proxy: start over
            self._passed.clear()
        self._passed.add(origin)

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise Forbidden(f"refusing to fetch {url!r}: only http and https upstreams")
        if not self.host_allowed(host):
            raise Forbidden(f"upstream host {host} is not in upstream.allow_hosts",
                            hint="add it to upstream.allow_hosts in the config")
        try:
            addr = str(ipaddress.ip_address(host))
        except ValueError:
            legacy = _legacy_ipv4(host)
            if legacy is None:
                return  # a name: checked by the resolver once resolved
            addr = legacy
        if not self.address_allowed(host, addr, _netloc(url)[1]):
            raise Forbidden(
                f"refusing to connect to {host}: a loopback, link-local or private address",
                hint="list its network in upstream.allow_networks if this is intended")


def _legacy_ipv4(host: str) -> str | None:
    """The address of an IPv4 literal in a form the C library still accepts
    (2130706433, 0x7f.1, 0177.0.0.1, 127.1), or None for a host name."""
    if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host) \
            or not host[0].isdigit():
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


def _netloc(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return ((parts.hostname or "").lower(),
            parts.port or (443 if parts.scheme == "https" else 80))


class PolicyResolver(AbstractResolver):
    """Resolves names, then refuses answers that the policy forbids, so that a
    public name pointing at an internal address cannot reach inside."""

    def __init__(self, policy: UpstreamPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results
                   if self._policy.address_allowed(host, r["host"], port)]
        if not allowed:
            raise Forbidden(
                f"refusing to connect to {host}: it resolves to a loopback, link-local "
                "or private address",
                hint="list its network in upstream.allow_networks if this is intended")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class TooSlow(UpstreamTimeout):
    """An upstream body arrived slower than upstream.min_rate."""


class MinRate:
    """upstream.min_rate on one body being read: each window of `window`
    seconds must bring at least rate * window bytes, or the read ends with
    TooSlow. The error is set on the response's stream, the way aiohttp's
    own read timeout is: the reader wakes up with it, nothing is cancelled (a
    write of the body in progress finishes). Call `got(n)` for each chunk."""

    def __init__(self, up: Upstream, rate: int, window: float) -> None:
        self._up = up
        self._rate, self._window = rate, window
        self._quota = int(rate * window)
        self._got = 0       # bytes in the current window
        self.total = 0
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + window
        self._timer: asyncio.TimerHandle | None = None
        if self._quota > 0:
            self._timer = self._loop.call_at(self._deadline, self._check)

    def got(self, n: int) -> None:
        self.total += n
        self._got += n
        if self._got >= self._quota > 0:  # this window's quota met: a new window starts
            self._got = 0
            self._deadline = self._loop.time() + self._window

    def _check(self) -> None:
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._check)
            return
        self._timer = None
        log.warning("%s: aborted, slower than upstream.min_rate", self._up.url)
        self._up.response.content.set_exception(TooSlow(
            f"{self._up.url}: upstream sent less than {self._rate} bytes/s over "
            f"{self._window:g} s (upstream.min_rate), aborted after {self.total} bytes"))

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __enter__(self) -> MinRate:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@dataclass
class Upstream:
    """An upstream response whose body has not been read yet."""

    url: str          # the URL finally answered (after redirects)
    response: aiohttp.ClientResponse
    min_rate: tuple[int, float] = (0, 0.0)   # upstream.min_rate, min_rate_window

    @property
    def status(self) -> int:
        return self.response.status

    def release(self) -> None:
        self.response.release()

    @contextlib.contextmanager
    def large_reads(self) -> Iterator[None]:
        """`with up.large_reads():` around reading a large body: the event loop
        takes up to LARGE_READ bytes of it from the socket at a time (the
        connection goes back to the pool with asyncio's default)."""
        conn = self.response.connection
        transport = conn.transport if conn is not None else None
        if transport is None or not hasattr(transport, "max_size"):  # not asyncio's own
            yield
            return
        transport.max_size = LARGE_READ
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError):
                del transport.max_size  # the class's default again

    def watch_rate(self) -> MinRate:
        """`with up.watch_rate() as rate:` around reading the body; `rate.got(n)`
        for each chunk."""
        return MinRate(self, *self.min_rate)

    async def body(self, limit: int) -> bytes:
        """The whole body, at most `limit` bytes. (`content.read(n)` returns
        only what has arrived so far, not n bytes.) A body cut short of its
        Content-Length or longer than the limit is an UpstreamError."""
        parts: list[bytes] = []
        size = 0
        try:
            with self.watch_rate() as rate:
                while chunk := await self.response.content.read(1 << 18):
                    rate.got(len(chunk))
                    size += len(chunk)
                    if size > limit:
                        raise UpstreamError(f"{self.url}: larger than {limit} bytes")
                    parts.append(chunk)
        except aiohttp.ClientPayloadError as e:
            raise UpstreamError(f"{self.url}: body cut short ({e})") from e
        length = self.response.content_length
        if length is not None and size != length:
            raise UpstreamError(f"{self.url}: {size} bytes of the {length} announced")
        return b"".join(parts)


class Fetcher:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.policy = UpstreamPolicy(config)
        self._session: aiohttp.ClientSession | None = None
        self._tls_context: ssl.SSLContext | None = None

    async def _tls(self) -> ssl.SSLContext:
        """The context of https requests (`client_context`), made in a
        thread the first time: loading the CA file is blocking I/O."""
        if self._tls_context is None:
            self._tls_context = await asyncio.to_thread(client_context)
        return self._tls_context

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=PolicyResolver(self.policy), limit=256, limit_per_host=32,
            ttl_dns_cache=60, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=None, connect=self.config.connect_timeout,
                                        sock_connect=self.config.connect_timeout,
                                        sock_read=self.config.read_timeout)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False,
            read_bufsize=LARGE_READ,  # a body's reader holds a large read without pausing
            headers={"User-Agent": self.config.user_agent}, skip_auto_headers=("Accept-Encoding",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str, headers: dict[str, str] | None = None,
                  method: str = "GET") -> Upstream:
        """Send a request, following redirects (each hop checked by the policy).
        Transport failures become UpstreamError / UpstreamTimeout."""
        assert self._session is not None
        for _hop in range(MAX_REDIRECTS + 1):
            self.policy.check_url(url)
            tls = await self._tls() if url[:6].lower() == "https:" else None
            try:
                resp = await self._session.request(method, url, headers=headers or {},
                                                   allow_redirects=False, ssl=tls or True)
            except Forbidden:
                raise
            except TimeoutError as e:
                raise UpstreamTimeout(f"{url}: no answer within "
                                      f"{self.config.connect_timeout:g} s") from e
            except aiohttp.ClientError as e:
                raise UpstreamError(f"{url}: {type(e).__name__}: {e}") from e
            except OSError as e:
                raise UpstreamError(f"{url}: {e}") from e
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                location = resp.headers["Location"]
                resp.release()
                url = urljoin(url, location)
                continue
            return Upstream(url, resp, (self.config.min_rate, self.config.min_rate_window))
        raise UpstreamError(f"{url}: more than {MAX_REDIRECTS} redirects")
