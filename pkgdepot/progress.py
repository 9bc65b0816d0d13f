"""Progress for long work: a rich progress bar with rate and ETA on a
terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import TextIO

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, description: str, total: int, unit: str = "B",
                 stream: TextIO | None = None) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream: TextIO = stream or sys.stderr
        self._rich: object | None = None
        self._task: object | None = None
        self._last_line = 0.0
        self._start = time.monotonic()

    def __enter__(self) -> Progress:
        if self._stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                       DownloadColumn() if self.unit == "B" else TextColumn(
                           "{task.completed}/{task.total}"),
                       TransferSpeedColumn(), TimeRemainingColumn()]
            rp = RichProgress(*columns, console=Console(file=self._stream))
            rp.start()
            self._task = rp.add_task(self.description, total=self.total)
            self._rich = rp
        else:
            log.info("%s: %s", self.description, self._amount(self.total))
        return self

    def _amount(self, n: float) -> str:
        if self.unit == "B":
            return f"{n / 1e6:.1f} MB"
        return f"{int(n)} {self.unit}"

    def advance(self, n: int) -> None:
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, advance=n)  # type: ignore[attr-defined]
            return
        now = time.monotonic()
        if now - self._last_line >= 5 or self.done >= self.total:
            self._last_line = now
            rate = self.done / max(now - self._start, 1e-6)
            print(f"{self.description}: {self._amount(self.done)} of {self._amount(self.total)}"
                  f" ({rate / 1e6:.1f} MB/s)" if self.unit == "B" else
                  f"{self.description}: {self.done} of {self.total}",
                  file=self._stream, flush=True)

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()  # type: ignore[attr-defined]
