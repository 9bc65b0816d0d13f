"""What the depot counts, and the Prometheus text that shows it.

Two kinds of counters, kept cheap because hits are counted on the hot path:

* `Counters`, in every server process: requests answered and bytes sent to
  clients, by origin (a named repository, or HOST[:PORT] of the /HOST/ form)
  and result; plus per-minute totals for the status page's chart. With
  `server.workers > 1` each process counts what it answered itself and the
  leader sums the processes' `Counters.export()` when asked.
* `Stats`, in the process that fetches (the leader): upstream health and
  latency, bytes fetched, verification failures, recent errors.

`render_prometheus` turns the merged status (see proxy/status.py) into the
text exposition format.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The results requests are counted by (the Prometheus `result` label).
RESULTS = ("hit", "miss", "revalidated", "stale", "error")
BYTES_CACHE, BYTES_UPSTREAM = 5, 6   # slots after the results: bytes sent, by source
SLOTS = 7
#: X-Pkgdepot-Cache state -> (result slot, bytes slot). Mirror and snapshot
#: files come from the store: they are hits.
STATES = {"HIT": (0, BYTES_CACHE), "MISS": (1, BYTES_UPSTREAM), "REVALIDATED": (2, BYTES_CACHE),
          "STALE": (3, BYTES_CACHE), "MIRROR": (0, BYTES_CACHE), "SNAPSHOT": (0, BYTES_CACHE)}
ERROR_SLOT = 4
#: Per-minute series: the slots above plus bytes fetched from upstream.
SERIES = (*RESULTS, "sent_cache", "sent_upstream", "fetched")
MINUTES = 180
MAX_ORIGINS = 200      # /HOST/ forms can name any host: count the rest together
OTHER = "(other)"
NO_ORIGIN = "-"        # requests that never reached a repository (bad paths, refused)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECENT_ERRORS = 100


class Counters:
    """Requests answered and bytes sent by this process, by origin."""

    def __init__(self) -> None:
        self.by_origin: dict[str, list[int]] = {}
        #: (minute, cumulative totals at its start): the chart's raw data
        self._marks: deque[tuple[int, list[int]]] = deque(maxlen=MINUTES + 1)

    def _slots(self, origin: str) -> list[int]:
        c = self.by_origin.get(origin)
        if c is None:
            if len(self.by_origin) >= MAX_ORIGINS:
                origin = OTHER
            c = self.by_origin.setdefault(origin, [0] * SLOTS)
        return c

    def served(self, origin: str, state: str, nbytes: int) -> None:
        """A response from the store (HIT...) or from a download (MISS)."""
        c = self.by_origin.get(origin) or self._slots(origin)
        i, b = STATES[state]
        c[i] += 1
        c[b] += nbytes

    def error(self, origin: str) -> None:
        self._slots(origin)[ERROR_SLOT] += 1

    def aborted(self, origin: str, unsent: int) -> None:
        """A MISS whose download failed while the client received it: count it
        as an error, and only the bytes it was sent."""
        c = self._slots(origin)
        c[1] -= 1
        c[ERROR_SLOT] += 1
        c[BYTES_UPSTREAM] -= unsent

    def totals(self, fetched: int = 0) -> list[int]:
        out = [0] * SLOTS
        for c in self.by_origin.values():
            for i in range(SLOTS):
                out[i] += c[i]
        return [*out, fetched]

    def mark_minute(self, now: float, fetched: int = 0) -> None:
        """Record the totals at the start of the current minute (called by a
        timer once a minute)."""
        minute = int(now // 60)
        if self._marks and self._marks[-1][0] == minute:
            return
        self._marks.append((minute, self.totals(fetched)))

    def series(self, now: float, fetched: int = 0) -> list[tuple[int, list[int]]]:
        """Per-minute counts (minute since the epoch, one value per SERIES name),
        oldest first, the current minute so far last."""
        marks = [*self._marks, (int(now // 60) + 1, self.totals(fetched))]
        return [(m, [b - a for a, b in zip(ta, tb, strict=True)])
                for (m, ta), (_m2, tb) in itertools.pairwise(marks)]

    def export(self, now: float, fetched: int = 0) -> dict[str, Any]:
        """This process's counts as JSON-able data, for `merge_counts`."""
        return {"origins": {o: list(c) for o, c in self.by_origin.items()},
                "series": [[m, v] for m, v in self.series(now, fetched)]}


def merge_counts(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the exports of several processes: origins slot by slot, series
    minute by minute."""
    origins: dict[str, list[int]] = {}
    minutes: dict[int, list[int]] = {}
    for part in parts:
        for origin, slots in part["origins"].items():
            acc = origins.setdefault(origin, [0] * SLOTS)
            for i, v in enumerate(slots[:SLOTS]):
                acc[i] += int(v)
        for minute, values in part["series"]:
            acc = minutes.setdefault(int(minute), [0] * len(SERIES))
            for i, v in enumerate(values[:len(SERIES)]):
                acc[i] += int(v)
    return {"origins": origins, "series": sorted(minutes.items())}


@dataclass
class UpstreamHealth:
    """How one upstream (a base URL of a repository, or http://HOST[:PORT])
    has been answering."""

    ok: int = 0
    failed: int = 0
    last_ok: float | None = None
    last_failure: float | None = None
    last_error: str = ""
    last_latency: float | None = None
    latency_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    def record(self, now: float, latency: float, error: str | None) -> None:
        if error is None:
            self.ok += 1
            self.last_ok = now
        else:
            self.failed += 1
            self.last_failure = now
            self.last_error = error
        self.last_latency = latency
        self.latency_sum += latency
        for i, bound in enumerate(LATENCY_BUCKETS):
            if latency <= bound:
                self.buckets[i] += 1
                break
        else:
            self.buckets[-1] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "failed": self.failed, "last_ok": self.last_ok,
                "last_failure": self.last_failure, "last_error": self.last_error,
                "last_latency": self.last_latency, "latency_sum": self.latency_sum,
                "buckets": list(self.buckets)}


@dataclass
class Stats:
    """What the fetching process counts (the cache's side; the server counts
    requests in `Counters`)."""

    verify_failures: int = 0
    upstream_requests: int = 0
    bytes_from_upstream: int = 0
    fetched_by_origin: dict[str, int] = field(default_factory=dict)
    upstreams: dict[str, UpstreamHealth] = field(default_factory=dict)
    #: (time, kind, message), newest last: kind is "verification", "upstream" or "index"
    recent_errors: deque[tuple[float, str, str]] = field(
        default_factory=lambda: deque(maxlen=RECENT_ERRORS))

    def error(self, msg: str, kind: str = "upstream") -> None:
        self.recent_errors.append((time.time(), kind, msg))

    def fetched(self, origin: str, nbytes: int) -> None:
        self.bytes_from_upstream += nbytes
        if origin not in self.fetched_by_origin and len(self.fetched_by_origin) >= MAX_ORIGINS:
            origin = OTHER
        self.fetched_by_origin[origin] = self.fetched_by_origin.get(origin, 0) + nbytes

    def upstream(self, base: str, latency: float, error: str | None = None) -> None:
        """One upstream request answered (error None: any HTTP answer below 500)
        or failed, after `latency` seconds to the response head."""
        health = self.upstreams.get(base)
        if health is None:
            if len(self.upstreams) >= MAX_ORIGINS:
                base = OTHER
            health = self.upstreams.setdefault(base, UpstreamHealth())
        health.record(time.time(), latency, error)


# -- Prometheus text exposition ---------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        if labels:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {_num(value)}")
        else:
            self.lines.append(f"{name} {_num(value)}")


def render_prometheus(status: Mapping[str, Any]) -> str:
    """The status of the depot (proxy/status.py `collect`) in Prometheus's text
    format, version 0.0.4."""
    t = _Text()
    origins: Mapping[str, list[int]] = status["counts"]["origins"]
    t.family("pkgdepot_requests_total", "counter",
             "Requests for repository files, by origin (repository or host) and result.")
    for origin, slots in sorted(origins.items()):
        for i, result in enumerate(RESULTS):
            t.sample("pkgdepot_requests_total", slots[i], repo=origin, result=result)
    t.family("pkgdepot_sent_bytes_total", "counter",
             "Body bytes sent to clients, by source: cache (stored files) or upstream "
             "(a download in progress or just finished).")
    for origin, slots in sorted(origins.items()):
        t.sample("pkgdepot_sent_bytes_total", slots[BYTES_CACHE], repo=origin, source="cache")
        t.sample("pkgdepot_sent_bytes_total", slots[BYTES_UPSTREAM], repo=origin,
                 source="upstream")
    cache: Mapping[str, Any] = status["cache"]
    t.family("pkgdepot_upstream_fetched_bytes_total", "counter",
             "Bytes downloaded from upstream, by origin.")
    for origin, n in sorted(cache["fetched_by_origin"].items()):
        t.sample("pkgdepot_upstream_fetched_bytes_total", n, repo=origin)
    t.family("pkgdepot_upstream_requests_total", "counter",
             "Requests sent upstream, by upstream and outcome (ok: any answer below 500).")
    upstreams: Mapping[str, Mapping[str, Any]] = cache["upstreams"]
    for base, h in sorted(upstreams.items()):
        t.sample("pkgdepot_upstream_requests_total", h["ok"], upstream=base, outcome="ok")
        t.sample("pkgdepot_upstream_requests_total", h["failed"], upstream=base,
                 outcome="failed")
    t.family("pkgdepot_upstream_latency_seconds", "histogram",
             "Seconds from sending a request upstream to its response head (or failure).")
    for base, h in sorted(upstreams.items()):
        running = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), h["buckets"], strict=True):
            running += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            t.sample("pkgdepot_upstream_latency_seconds_bucket", running, upstream=base, le=le)
        t.sample("pkgdepot_upstream_latency_seconds_sum", float(h["latency_sum"]), upstream=base)
        t.sample("pkgdepot_upstream_latency_seconds_count", running, upstream=base)
    t.family("pkgdepot_verification_failures_total", "counter",
             "Downloads that failed verification (size, hash or signature) and were not kept.")
    t.sample("pkgdepot_verification_failures_total", cache["verify_failures"])
    t.family("pkgdepot_downloads_in_flight", "gauge", "Upstream downloads running now.")
    t.sample("pkgdepot_downloads_in_flight", len(status["in_flight"]))
    store: Mapping[str, Any] = status["store"]
    t.family("pkgdepot_store_bytes", "gauge", "Bytes of blobs in the data directory.")
    t.sample("pkgdepot_store_bytes", store["bytes"])
    t.family("pkgdepot_store_files", "gauge", "Blobs in the data directory.")
    t.sample("pkgdepot_store_files", store["files"])
    t.family("pkgdepot_store_limit_bytes", "gauge", "cache.max_size (0: no limit).")
    t.sample("pkgdepot_store_limit_bytes", store["limit"])
    t.family("pkgdepot_processes", "gauge", "Server processes whose counts are included.")
    t.sample("pkgdepot_processes", status["processes"])
    t.family("pkgdepot_start_time_seconds", "gauge", "When the server started (Unix time).")
    t.sample("pkgdepot_start_time_seconds", float(status["started"]))
    return "\n".join(t.lines) + "\n"
