"""A bounded HTTP load generator: fixed request rate, keep-alive or a new connection per request, no retries.

Used by the demo, the bench and the tests to count requests lost during a reload. Every run is bounded by
its duration and by a hard cap on the number of requests; each request is recorded, never retried.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, Literal

import aiohttp

RELEASE_HEADER = "x-nextdeploy-release"

Mode = Literal["keepalive", "new-connection"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    start: float  # seconds since the run started
    latency: float  # seconds, until the body was read (or the request failed)
    status: int | None
    error: str | None  # exception class name, e.g. "ServerDisconnectedError"
    release: str | None  # value of the x-nextdeploy-release header
    detail: str | None = None  # the exception's message, for reports

    @property
    def failed(self) -> bool:
        return self.error is not None or self.status is None or self.status >= 500


@dataclass(frozen=True, slots=True)
class Percentiles:
    count: int
    p50: float | None
    p99: float | None
    max: float | None


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of already sorted values; None when empty."""
    if not sorted_values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class LoadResult:
    url: str
    mode: str
    rate: float
    duration: float  # the requested duration
    elapsed: float = 0.0  # wall time of the run, including the last requests' completion
    # time.monotonic() at the run's start (the records' time base): lets a caller place its own events,
    # e.g. `window = (t_reload - result.t0_monotonic, ...)`.
    t0_monotonic: float = 0.0
    records: list[RequestRecord] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.records)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if r.failed)

    @property
    def ok(self) -> int:
        return self.total - self.failed

    def failures(self) -> list[RequestRecord]:
        return [r for r in self.records if r.failed]

    def releases_seen(self, window: tuple[float, float] | None = None) -> Counter[str | None]:
        """How many answers each release gave (None: no header or no answer), optionally in a start window."""
        return Counter(r.release for r in self._in_window(window) if not r.failed)

    def errors(self) -> Counter[str]:
        """Failures by kind: exception class name or "HTTP <status>"."""
        return Counter(r.error or f"HTTP {r.status}" for r in self.failures())

    def percentiles(self, window: tuple[float, float] | None = None) -> Percentiles:
        """p50/p99/max latency of the requests that started inside ``window`` (seconds since start), or all."""
        latencies = sorted(r.latency for r in self._in_window(window))
        return Percentiles(
            count=len(latencies),
            p50=percentile(latencies, 50),
            p99=percentile(latencies, 99),
            max=latencies[-1] if latencies else None,
        )

    def _in_window(self, window: tuple[float, float] | None) -> list[RequestRecord]:
        if window is None:
            return self.records
        lo, hi = window
        return [r for r in self.records if lo <= r.start < hi]

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "mode": self.mode,
            "rate": self.rate,
            "duration": self.duration,
            "elapsed": round(self.elapsed, 3),
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "errors": dict(self.errors()),
            "releases": {str(k): v for k, v in self.releases_seen().items()},
            "latency": asdict(self.percentiles()),
        }

    def to_json(self, *, records: bool = True) -> str:
        data = self.summary()
        if records:
            data["records"] = [asdict(r) for r in self.records]
        return json.dumps(data)


async def run_load(
    url: str,
    *,
    rate: float = 200,
    duration: float = 10,
    mode: Mode = "keepalive",
    connections: int = 16,
    timeout: float = 5.0,
    max_requests: int | None = None,
    stop: threading.Event | None = None,
) -> LoadResult:
    """GET ``url`` at a fixed rate for ``duration`` seconds; record every request, retry none.

    Request i is scheduled at t0 + i/rate and sent by one of ``connections`` workers (open-loop-ish: when all
    workers are busy, requests start late rather than being dropped). No request starts after ``duration``
    or beyond ``max_requests`` (default rate*duration); each is bounded by ``timeout``. Setting ``stop``
    ends the run early (no new requests start).
    """
    if rate <= 0 or duration <= 0 or connections < 1 or timeout <= 0:
        raise ValueError("rate, duration, timeout must be > 0 and connections >= 1")
    if mode not in ("keepalive", "new-connection"):
        raise ValueError(f"unknown mode {mode!r}")
    cap = max_requests if max_requests is not None else math.ceil(rate * duration)
    result = LoadResult(url=url, mode=mode, rate=rate, duration=duration)
    # force_close: a new TCP connection per request. Otherwise up to `connections` pooled keep-alive ones.
    connector = aiohttp.TCPConnector(limit=connections, force_close=(mode == "new-connection"))
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    loop = asyncio.get_running_loop()
    next_index = 0

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        # aiohttp (>= 3.10) silently resends an idempotent request once when a reused keep-alive connection
        # turns out to be closed. That would hide exactly the failures we are here to count.
        if hasattr(session, "_retry_connection"):
            session._retry_connection = False
        t0 = loop.time()  # asyncio's clock is time.monotonic()
        result.t0_monotonic = time.monotonic()

        async def worker() -> None:
            nonlocal next_index
            while True:
                i = next_index
                due = i / rate
                if i >= cap or due >= duration or (stop is not None and stop.is_set()):
                    return
                next_index += 1
                delay = t0 + due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                    if stop is not None and stop.is_set():
                        return
                result.records.append(await _one_request(session, url, loop, t0))

        await asyncio.gather(*(worker() for _ in range(connections)))
        result.elapsed = loop.time() - t0
    result.records.sort(key=lambda r: r.start)
    return result


async def _one_request(
    session: aiohttp.ClientSession, url: str, loop: asyncio.AbstractEventLoop, t0: float
) -> RequestRecord:
    started = loop.time()
    status: int | None = None
    release: str | None = None
    try:
        async with session.get(url, allow_redirects=False) as resp:
            status = resp.status
            release = resp.headers.get(RELEASE_HEADER)
            await resp.read()
    except Exception as exc:  # every failure kind counts; none is retried
        return RequestRecord(
            start=started - t0,
            latency=loop.time() - started,
            status=status,
            error=type(exc).__name__,
            release=release,
            detail=str(exc)[:200] or None,
        )
    return RequestRecord(start=started - t0, latency=loop.time() - started, status=status, error=None, release=release)


def run_load_sync(url: str, **kwargs: Any) -> LoadResult:
    """``run_load`` in a fresh event loop (for callers without one)."""
    return asyncio.run(run_load(url, **kwargs))


class BackgroundLoad:
    """Run load in a thread while the caller does something else (e.g. a deploy).

    >>> with BackgroundLoad(url, rate=200, duration=12) as load:
    ...     reload_app()
    >>> result = load.result()

    The load stops by itself at ``duration``; ``stop()`` ends it early. To relate your own events to the
    records, take ``time.monotonic()`` and subtract ``result().t0_monotonic``.
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._url = url
        self._kwargs = kwargs
        self._stop = threading.Event()
        self._result: LoadResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nextdeploy-load", daemon=True)

    def _run(self) -> None:
        try:
            self._result = asyncio.run(run_load(self._url, stop=self._stop, **self._kwargs))
        except BaseException as exc:
            self._error = exc

    def start(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def result(self, timeout: float | None = None) -> LoadResult:
        """Wait for the run to end (bounded by its duration plus the request timeout) and return it."""
        if timeout is None:
            duration = float(self._kwargs.get("duration", 10))
            timeout = duration + float(self._kwargs.get("timeout", 5.0)) + 30
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(10)
            raise TimeoutError("load generator did not finish in time")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def __enter__(self) -> BackgroundLoad:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.stop()  # the caller failed: don't keep hammering the server
