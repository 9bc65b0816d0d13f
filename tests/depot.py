"""Run a real `pkgdepot serve` as a subprocess on 127.0.0.1 for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class Headers(dict[str, str]):
    """Response headers, looked up without regard to case as HTTP wants (a
    worker process relays the leader's answers, and their names, e.g. 'Etag',
    as its HTTP client spells them)."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DepotProcess:
    """`pkgdepot serve` with a private data directory and config."""

    def __init__(self, workdir: Path, config: str = "", port: int | None = None,
                 wrapper: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """`wrapper`: a command line the server's runs inside (e.g. unshare ...);
        `env`: more environment for it."""
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.config_path = workdir / "pkgdepot.toml"
        self.config_path.write_text(config)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "depot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.wrapper = wrapper or []
        self.env = env or {}

    def start(self, timeout: float = 20) -> DepotProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 (owned by the process)
        logged_before = log.tell()
        self.proc = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "pkgdepot", "-v", "serve", "--listen",
             f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir),
             "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pkgdepot exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as r:
                    # a worker may answer before the leader listens: wait for
                    # the leader's word that all its processes do
                    if r.status == 200 and b"listening on" in \
                            self.log_path.read_bytes()[logged_before:]:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"pkgdepot did not start within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> DepotProcess:
        self.stop()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def head(self, path: str, timeout: float = 30) -> dict[str, str]:
        """HEAD: the response headers (also of an HTTP error)."""
        req = urllib.request.Request(self.url + path, method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Headers(r.headers.items())
        except urllib.error.HTTPError as e:
            return Headers(e.headers.items())

    def get(self, path: str, headers: dict[str, str] | None = None,
            timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        """GET (status, headers, body) without raising on HTTP errors."""
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, Headers(r.headers.items()), r.read()
        except urllib.error.HTTPError as e:
            return e.code, Headers(e.headers.items()), e.read()

    def __enter__(self) -> DepotProcess:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
