"""The access log (combined log format with the cache result appended, or one
JSON object a line) and JSON formatting of the server's own log.

    server.access_log = "/var/log/pkgdepot/access.log"   # "-": stderr, "": off
    server.log_format = "json"                          # or "text"

Lines are collected in memory and written out at most a second later (and
at shutdown), so that logging costs a hit no system call. Every process of
`server.workers` appends whole lines to the same file (O_APPEND).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pkgdepot.errors import ConfigError

if TYPE_CHECKING:
    from aiohttp import web

FLUSH_AFTER = 1.0
FLUSH_LINES = 512
LOG_FORMATS = ("text", "json")
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(32), 127)} | {ord('"'): '\\"', ord("\\"): "\\\\"}


def _quote(text: str) -> str:
    """A header or request line, safe between double quotes on one line."""
    return text.translate(_ESCAPES)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _iso(record.created), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def use_log_format(log_format: str) -> None:
    """Switch the handlers of the root logger to `log_format` ("text" keeps them)."""
    if log_format not in LOG_FORMATS:
        raise ConfigError(f'server.log_format: expected "text" or "json", got {log_format!r}')
    if log_format == "json":
        root = logging.getLogger()
        if not root.handlers:
            root.addHandler(logging.StreamHandler(sys.stderr))
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())


def _not_a_client_leaving(record: logging.LogRecord) -> bool:
    """aiohttp logs a handler's exception with its traceback; a client that
    closed its connection mid-response is routine (wrk, apt and curl all do
    it), not an error of the depot."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, ConnectionResetError | BrokenPipeError)


def quiet_client_disconnects() -> None:
    """Keep clients that go away mid-response out of the server's log."""
    logger = logging.getLogger("aiohttp.server")
    if _not_a_client_leaving not in logger.filters:
        logger.addFilter(_not_a_client_leaving)


class AccessLog:
    """One line per client request, in the combined log format followed by the
    cache result (hit, miss, revalidated, stale, mirror, snapshot, error, or
    "-" for the depot's own pages), or as JSON."""

    def __init__(self, target: str, log_format: str = "text") -> None:
        self.json = log_format == "json"
        self._stream: TextIO | None = None
        self._fd: int | None = None
        if target == "-":
            self._stream = sys.stderr
        else:
            path = Path(target)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            except OSError as e:
                raise ConfigError(f"server.access_log: cannot open {path}: {e.strerror}",
                                  hint="pick a writable path, \"-\" for stderr or \"\" for no "
                                       "access log") from e
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._stamp_second = -1
        self._stamp = ""

    def _clf_time(self, now: float) -> str:
        second = int(now)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime(second))
        return self._stamp

    def response(self, request: web.BaseRequest, resp: web.StreamResponse | None,
                 started: float) -> None:
        """Log one answered request (resp None: it failed without an answer,
        e.g. the client went away)."""
        status, nbytes, result = 499, 0, "error"
        if resp is not None:
            status = resp.status
            if request.method != "HEAD" and status not in (204, 304):
                nbytes = resp.content_length or 0
            state = resp.headers.get("X-Pkgdepot-Cache")
            result = "error" if status >= 400 else state.lower() if state else "-"
        headers = request.headers
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        self.record(request.remote, request.method, request.raw_path, version, status, nbytes,
                    headers.get("Referer", ""), headers.get("User-Agent", ""), result, started,
                    time.time() - started)

    def record(self, remote: str | None, method: str, target: str, version: str,
               status: int, nbytes: int, referer: str, user_agent: str, result: str,
               started: float, duration: float) -> None:
        if self.json:
            line = json.dumps({
                "time": _iso(started), "remote": remote or "-", "method": method,
                "target": target, "protocol": version, "status": status, "bytes": nbytes,
                "referer": referer, "user_agent": user_agent, "result": result,
                "duration_ms": round(duration * 1000, 3)}, ensure_ascii=False)
        else:
            line = (f'{remote or "-"} - - {self._clf_time(started)} '
                    f'"{_quote(method)} {_quote(target)} {version}" {status} '
                    f'{nbytes or "-"} "{_quote(referer or "-")}" "{_quote(user_agent or "-")}" '
                    f"{result}")
        self._lines.append(line)
        if len(self._lines) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = "\n".join(self._lines) + "\n"
        self._lines.clear()
        try:
            if self._fd is not None:
                payload = data.encode("utf-8", "backslashreplace")
                while payload:
                    n = os.write(self._fd, payload)
                    payload = payload[n:]
            elif self._stream is not None:
                self._stream.write(data)
                self._stream.flush()
        except OSError as e:
            logging.getLogger(__name__).warning("cannot write the access log: %s", e)

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
