"""HTTP probes of a release: one GET with a timeout, judged against ``[health]``."""

from __future__ import annotations

import http.client
import random
import socket
from dataclasses import dataclass, field
from pathlib import Path

from nextdeploy.core.config import HealthConfig

RELEASE_HEADER = "x-nextdeploy-release"


@dataclass(frozen=True)
class ProbeResult:
    status: int | None
    body: str = ""
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def release(self) -> str | None:
        """Which release answered (the launcher sets this header on every response)."""
        return self.headers.get(RELEASE_HEADER)


def local_address(hostname: str) -> str:
    """Where to reach, from this host, a server listening on ``hostname`` (a wildcard: loopback)."""
    return "127.0.0.1" if hostname in ("0.0.0.0", "::", "") else hostname


def http_get(host: str, port: int, path: str, timeout: float) -> ProbeResult:
    """One GET on a fresh connection; network errors become ``ProbeResult.error``."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close", "User-Agent": "nextdeploy-probe"})
        response = connection.getresponse()
        body = response.read(64 * 1024).decode("utf-8", errors="replace")
        headers = {name.lower(): value for name, value in response.getheaders()}
        return ProbeResult(response.status, body, None, headers)
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        return ProbeResult(None, "", _network_error(exc, host, port, timeout))
    finally:
        connection.close()


def _network_error(exc: Exception, host: str, port: int, timeout: float) -> str:
    """What went wrong, in words: "connection refused (nothing listens on 127.0.0.1:3000)"."""
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused (nothing listens on {host}:{port})"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, http.client.RemoteDisconnected):  # a ConnectionResetError too: first
        return "the server closed the connection without answering"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def health_problem(result: ProbeResult, health: HealthConfig) -> str | None:
    """Why ``result`` is not healthy, or None when it is."""
    if result.error is not None:
        return result.error
    if result.status != health.expect_status:
        return f"{health.path} answered {result.status}, expected {health.expect_status}"
    if health.expect_body is not None and health.expect_body not in result.body:
        return f"{health.path} body does not contain {health.expect_body!r}"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that was free a moment ago: for a bind right now (see ``listen_port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
        probe_socket.bind((host, 0))
        return int(probe_socket.getsockname()[1])


def listen_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range, for a server that listens on it later (the preflight
    server; the tests' and the bench's sites). A port from ``free_port`` can be handed out again by the
    next ``listen(0)`` or outgoing connection: the launcher's own private listen once got the very port the
    preflight had picked for it (EADDRINUSE, a good release rejected). Below the range, only an explicit
    bind can take it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    floor = max(1024, low - 10000)
    if low <= floor:
        return free_port(host)
    for _ in range(50):
        port = random.randrange(floor, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
            probe_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe_socket.bind((host, port))
            except OSError:
                continue
            return int(probe_socket.getsockname()[1])
    return free_port(host)
