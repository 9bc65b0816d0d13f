"""Progress for long work: a rich progress bar with rate and ETA on a
terminal, plain lines otherwise (logs, cron, systemd).

The plain form writes at most one line every `interval` seconds while the
work runs (none before the first interval has passed) and one when it ends,
so short steps give one line each:

    verify: 6.3 MB of 12.0 MB (52%), 4.1 MB/s, ETA 1 s
    verify: done, 12.0 MB in 3 s (4.0 MB/s)
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import ProgressColumn

log = logging.getLogger(__name__)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_seconds(s: float) -> str:
    s = int(s + 0.5)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _item_rate(unit: str) -> ProgressColumn:
    """A rich column "12 packages/s", empty until rich knows a speed (rich's
    task.speed is None at first: a format string column would fail)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class ItemRate(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text("" if task.speed is None else f"{task.speed:.0f} {unit}/s")

    return ItemRate()


class Progress:
    """`with Progress("import", total_bytes) as bar: bar.advance(n)`.

    `unit` "B" counts bytes; any other unit ("files", "entries") counts
    items. `stream` defaults to stderr; `interval` is the seconds between
    plain lines."""

    def __init__(self, description: str, total: int, unit: str = "B",
                 stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self.interval = interval
        self._stream: TextIO = stream or sys.stderr
        self._rich: object | None = None
        self._task: object | None = None
        self._start = time.monotonic()
        self._last_line = self._start

    def __enter__(self) -> Progress:
        self._start = self._last_line = time.monotonic()
        if self._stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            rate = TransferSpeedColumn() if self.unit == "B" else _item_rate(self.unit)
            columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                       DownloadColumn() if self.unit == "B" else MofNCompleteColumn(),
                       rate, TimeRemainingColumn()]
            rp = RichProgress(*columns, console=Console(file=self._stream))
            rp.start()
            self._task = rp.add_task(self.description, total=self.total)
            self._rich = rp
        return self

    def _amount(self, n: float) -> str:
        if self.unit == "B":
            return human_bytes(n)
        return f"{int(n)} {self.unit}"

    def _rate(self, elapsed: float) -> str:
        rate = self.done / max(elapsed, 1e-6)
        return f"{human_bytes(rate)}/s" if self.unit == "B" else f"{rate:.0f} {self.unit}/s"

    def _line(self, text: str) -> None:
        print(f"{self.description}: {text}", file=self._stream, flush=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, advance=n)  # type: ignore[attr-defined]
            return
        now = time.monotonic()
        if now - self._last_line < self.interval or self.done >= self.total:
            return
        self._last_line = now
        elapsed = now - self._start
        text = f"{self._amount(self.done)} of {self._amount(self.total)}"
        if self.total > 0:
            text += f" ({100 * self.done // self.total}%)"
        text += f", {self._rate(elapsed)}"
        if 0 < self.done < self.total:
            text += f", ETA {human_seconds(elapsed * (self.total - self.done) / self.done)}"
        self._line(text)

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()  # type: ignore[attr-defined]
            return
        elapsed = time.monotonic() - self._start
        outcome = "done" if t is None else "stopped"
        self._line(f"{outcome}, {self._amount(self.done)} in {human_seconds(elapsed)} "
                   f"({self._rate(elapsed)})")
