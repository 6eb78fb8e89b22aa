"""Fast tests of nextdeploy.demo.loadgen: the summaries, and short real runs against a tiny local server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("aiohttp")

from nextdeploy.demo.loadgen import (
    BackgroundLoad,
    LoadResult,
    RequestRecord,
    percentile,
    run_load_sync,
)


def rec(
    start: float, latency: float = 0.01, status: int | None = 200, error: str | None = None, release: str | None = "A"
) -> RequestRecord:
    return RequestRecord(start=start, latency=latency, status=status, error=error, release=release)


# ---------------------------------------------------------------------------------------------- pure parts


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_failed_ok_and_failures() -> None:
    result = LoadResult(
        url="u",
        mode="keepalive",
        rate=1,
        duration=1,
        records=[
            rec(0.0),
            rec(0.1, status=404),  # a 4xx is an answer, not a failure
            rec(0.2, status=500),
            rec(0.3, status=None, error="ServerDisconnectedError", release=None),
            rec(0.4, status=200, error="ClientPayloadError"),  # failed while reading the body
            rec(0.5, status=None, error=None, release=None),  # no status at all: failed
        ],
    )
    assert result.total == 6
    assert result.failed == 4
    assert result.ok == 2
    assert [r.start for r in result.failures()] == [0.2, 0.3, 0.4, 0.5]
    assert result.errors() == {"HTTP 500": 1, "ServerDisconnectedError": 1, "ClientPayloadError": 1, "HTTP None": 1}


def test_releases_seen_counts_answers_only() -> None:
    result = LoadResult(
        url="u",
        mode="keepalive",
        rate=1,
        duration=1,
        records=[
            rec(0.0, release="A"),
            rec(1.0, release="A"),
            rec(2.0, release="B"),
            rec(3.0, release=None),
            rec(3.5, status=502, release="B"),
        ],
    )
    assert result.releases_seen() == {"A": 2, "B": 1, None: 1}
    assert result.releases_seen(window=(1.5, 10)) == {"B": 1, None: 1}


def test_percentiles_window() -> None:
    records = [rec(i / 100, latency=(i + 1) / 1000) for i in range(100)]  # latencies 1..100 ms
    result = LoadResult(url="u", mode="keepalive", rate=100, duration=1, records=records)
    p = result.percentiles()
    assert (p.count, p.p50, p.p99, p.max) == (100, 0.05, 0.099, 0.1)
    w = result.percentiles(window=(0.5, 0.6))  # starts 0.50..0.59 -> latencies 51..60 ms
    assert w.count == 10
    assert w.p50 == pytest.approx(0.055)
    assert w.max == pytest.approx(0.060)
    empty = result.percentiles(window=(5, 6))
    assert (empty.count, empty.p50, empty.p99, empty.max) == (0, None, None, None)


def test_to_json_round_trip() -> None:
    result = LoadResult(
        url="u",
        mode="new-connection",
        rate=10,
        duration=1,
        records=[rec(0.0), rec(0.1, status=None, error="TimeoutError", release=None)],
    )
    data = json.loads(result.to_json())
    assert data["total"] == 2 and data["failed"] == 1 and data["mode"] == "new-connection"
    assert data["errors"] == {"TimeoutError": 1}
    assert data["records"][1]["error"] == "TimeoutError"
    assert "records" not in json.loads(result.to_json(records=False))


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        run_load_sync("http://127.0.0.1:1/", rate=0, duration=1)
    with pytest.raises(ValueError):
        run_load_sync("http://127.0.0.1:1/", mode="bogus")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- real runs


class TinyServer:
    """A raw asyncio HTTP/1.1 server on 127.0.0.1 in its own thread, with a few behaviours by path.

    /ok: 200 keep-alive with the release header; /500: 500; /hang: never answers;
    /drop-second: the second request on a connection gets the connection closed (no answer).
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.connections = 0
        self.requests = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                path = head.split(b" ", 2)[1].decode()
                served += 1
                if path == "/hang":
                    await asyncio.sleep(30)
                    return
                if path == "/drop-second" and served == 2:
                    return  # close without answering
                status = b"500 Internal Server Error" if path == "/500" else b"200 OK"
                body = b"hello"
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nx-nextdeploy-release: T\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: keep-alive\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> TinyServer:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture
def server() -> Iterator[TinyServer]:
    with TinyServer() as s:
        yield s


def test_keepalive_run_is_bounded_and_reuses_connections(server: TinyServer) -> None:
    t = time.monotonic()
    result = run_load_sync(f"http://127.0.0.1:{server.port}/ok", rate=100, duration=0.5, connections=4)
    assert time.monotonic() - t < 3
    assert result.total == 50
    assert result.failed == 0
    assert result.releases_seen() == {"T": 50}
    assert server.connections <= 4  # keep-alive: the pool, not one connection per request
    starts = [r.start for r in result.records]
    assert starts == sorted(starts) and starts[-1] < 0.6
    assert result.percentiles().p99 is not None


def test_new_connection_mode_opens_one_connection_per_request(server: TinyServer) -> None:
    result = run_load_sync(
        f"http://127.0.0.1:{server.port}/ok", rate=100, duration=0.3, mode="new-connection", connections=4
    )
    assert result.total == 30 and result.failed == 0
    assert server.connections == 30


def test_max_requests_caps_the_run(server: TinyServer) -> None:
    result = run_load_sync(f"http://127.0.0.1:{server.port}/ok", rate=200, duration=5, max_requests=7)
    assert result.total == 7
    assert result.elapsed < 1


def test_5xx_counts_as_failed(server: TinyServer) -> None:
    result = run_load_sync(f"http://127.0.0.1:{server.port}/500", rate=50, duration=0.2)
    assert result.total == 10 and result.failed == 10
    assert result.errors() == {"HTTP 500": 10}


def test_a_dropped_keepalive_request_is_recorded_not_retried(server: TinyServer) -> None:
    # aiohttp by default resends a GET once when a reused connection was closed; we must not.
    result = run_load_sync(f"http://127.0.0.1:{server.port}/drop-second", rate=20, duration=0.15, connections=1)
    assert result.total == 3
    assert [r.failed for r in result.records] == [False, True, False]
    assert result.records[1].error in {"ServerDisconnectedError", "ClientOSError"}
    assert server.requests == 3  # no hidden retry


def test_timeout_is_a_failure(server: TinyServer) -> None:
    t = time.monotonic()
    result = run_load_sync(f"http://127.0.0.1:{server.port}/hang", rate=10, duration=0.2, timeout=0.3)
    assert time.monotonic() - t < 2
    assert result.total == 2
    assert result.errors() == {"TimeoutError": 2} or result.errors() == {"ServerTimeoutError": 2}


def test_connection_refused_is_a_failure() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_load_sync(f"http://127.0.0.1:{port}/", rate=20, duration=0.1)
    assert result.total == 2 and result.failed == 2
    assert all(r.status is None and r.error for r in result.records)


def test_background_load_stops_by_itself(server: TinyServer) -> None:
    with BackgroundLoad(f"http://127.0.0.1:{server.port}/ok", rate=50, duration=0.4) as load:
        marker = time.monotonic()
    result = load.result(timeout=5)
    assert result.total == 20 and result.failed == 0
    assert abs(marker - result.t0_monotonic) < 0.4  # same clock, near the start


def test_background_load_stop_ends_early(server: TinyServer) -> None:
    load = BackgroundLoad(f"http://127.0.0.1:{server.port}/ok", rate=50, duration=30).start()
    time.sleep(0.2)
    load.stop()
    result = load.result(timeout=5)
    assert 0 < result.total < 30
