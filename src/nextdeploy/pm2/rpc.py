"""Talking to the PM2 daemon over its socket, without spawning the pm2 CLI.

Every ``pm2 jlist`` starts node and loads PM2's CLI: 0.25 s here, and a deploy lists the processes
four times or more, most of it between the switch and "every worker verified". The daemon answers the
same question in about 2 ms on its RPC socket ``<PM2_HOME>/rpc.sock``, so reads go there first.

The protocol is PM2's bundled pm2-axon (a req/rep socket) + pm2-axon-rpc, framed with AMP:

    frame   = meta byte (version 1 << 4 | argument count), then per argument: u32 BE length + bytes
    argument = b"s:" + text  |  b"j:" + JSON  |  raw bytes
    request = [j:{"type": "call", "method": M, "args": [...]}, s:<request id>]
    reply   = [j:{"args": [result, ...]}  or  j:{"error": message}, s:<request id>]

Uses: the process list (``getMonitorData``); reloading workers by id with their own env and options
(``reloadProcessId``, the executor's ``ReloadWorkers`` op; see ``plans.pm2.in_place_reload_ids`` for when that
equals ``pm2 reload <ecosystem>``); starting one more worker like a given one and deleting workers by id
(``duplicateProcessId``, ``deleteProcessId``: the held cut-over's ``SpawnWorkers`` and ``DeleteWorkers``).
Everything else that changes PM2 (start, a reload with a new env, save, deleting the app) goes through the
CLI. Any problem here (no daemon, refused, timeout, an error reply, unexpected bytes) raises
``RpcUnavailable``; the callers fall back to the CLI (``pm2 jlist``, which also starts a daemon when there is
none; ``pm2 reload <ecosystem>``).

The daemon also publishes its event bus on ``<PM2_HOME>/pub.sock`` (an axon pub socket, frames
``[s:event, j:data]``). ``EventStream`` reads it, to see a new worker's 'ready' while PM2's answer to its
reload still waits for the old worker's exit.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path
from types import TracebackType
from typing import Any

PROTOCOL_VERSION = 1
REQUEST_ID = "nextdeploy:0"  # one call per connection: the id only has to match
MAX_REPLY_BYTES = 64 * 1024 * 1024  # a process list with its envs is KBs per process; anything near this is not PM2


class RpcUnavailable(Exception):
    """The daemon could not be asked over its socket; use the CLI instead."""


def encode_frame(parts: list[bytes]) -> bytes:
    if len(parts) > 0xF:
        raise ValueError("AMP frames carry at most 15 arguments")
    out = bytearray([PROTOCOL_VERSION << 4 | len(parts)])
    for part in parts:
        out += struct.pack(">I", len(part)) + part
    return bytes(out)


def decode_frame(data: bytes) -> tuple[list[bytes], int] | None:
    """``(arguments, bytes consumed)`` of the first complete frame in ``data``, or None if incomplete."""
    if not data:
        return None
    meta = data[0]
    if meta >> 4 != PROTOCOL_VERSION:
        raise RpcUnavailable(f"unexpected AMP version {meta >> 4}")
    offset, parts = 1, []
    for _ in range(meta & 0xF):
        if len(data) < offset + 4:
            return None
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if length > MAX_REPLY_BYTES:
            raise RpcUnavailable("reply too large")
        if len(data) < offset + length:
            return None
        parts.append(data[offset:offset + length])
        offset += length
    return parts, offset


def pack(value: Any) -> bytes:
    return b"s:" + value.encode() if isinstance(value, str) else b"j:" + json.dumps(value).encode()


def unpack(part: bytes) -> Any:
    if part.startswith(b"s:"):
        return part[2:].decode()
    if part.startswith(b"j:"):
        return json.loads(part[2:])
    return part


def call(socket_path: Path, method: str, *args: Any, timeout: float = 5.0) -> list[Any]:
    """Call ``method`` on the PM2 daemon; returns the reply's values (PM2's callback arguments after err)."""
    with send(socket_path, method, *args, timeout=timeout) as sock:
        return receive_reply(sock)


def send(socket_path: Path, method: str, *args: Any, timeout: float = 5.0) -> socket.socket:
    """Connect and send the call of ``method``; the caller reads the reply (``receive_reply``) and closes."""
    request = encode_frame([pack({"type": "call", "method": method, "args": list(args)}), pack(REQUEST_ID)])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(request)
    except OSError as exc:  # no socket, refused (daemon gone), timeout, path too long
        sock.close()
        raise RpcUnavailable(str(exc)) from None
    return sock


def receive_reply(sock: socket.socket) -> list[Any]:
    """The values of the reply to the call ``send`` made on ``sock``."""
    received = b""
    try:
        while (decoded := decode_frame(received)) is None:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise RpcUnavailable("the daemon closed the connection")
            received += chunk
            if len(received) > MAX_REPLY_BYTES:
                raise RpcUnavailable("reply too large")
    except OSError as exc:  # timeout, reset
        raise RpcUnavailable(str(exc)) from None
    parts, _ = decoded
    try:
        values = [unpack(part) for part in parts]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RpcUnavailable(f"undecodable reply: {exc}") from None
    if len(values) != 2 or values[1] != REQUEST_ID or not isinstance(values[0], dict):
        raise RpcUnavailable("unexpected reply shape")
    body = values[0]
    if "error" in body:
        raise RpcUnavailable(f"the daemon answered an error: {body['error']}")
    result = body.get("args")
    if not isinstance(result, list):
        raise RpcUnavailable("reply without values")
    return result


def process_list(pm2_home: Path, timeout: float = 5.0) -> list[dict[str, Any]]:
    """What ``pm2 jlist`` prints (the CLI does ``getMonitorData`` and prints the JSON), from the daemon."""
    values = call(pm2_home / "rpc.sock", "getMonitorData", {}, timeout=timeout)
    if not values or not isinstance(values[0], list):
        raise RpcUnavailable("getMonitorData returned no list")
    return [entry for entry in values[0] if isinstance(entry, dict)]


class EventStream:
    """PM2's event bus, read from ``<PM2_HOME>/pub.sock``: what PM2 itself waits on in a reload."""

    def __init__(self, socket_path: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._buffer = b""
        try:
            self._sock.connect(str(socket_path))
        except OSError as exc:
            self._sock.close()
            raise RpcUnavailable(str(exc)) from None

    def next_event(self, timeout: float) -> tuple[str, Any] | None:
        """The next ``(event, data)``, or None if none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (decoded := decode_frame(self._buffer)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(1 << 16)
            except TimeoutError:
                return None
            except OSError as exc:
                raise RpcUnavailable(str(exc)) from None
            if not chunk:
                raise RpcUnavailable("the daemon closed its event stream")
            self._buffer += chunk
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise RpcUnavailable("event too large")
        parts, used = decoded
        self._buffer = self._buffer[used:]
        try:
            values = [unpack(part) for part in parts]
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RpcUnavailable(f"undecodable event: {exc}") from None
        if len(values) != 2 or not isinstance(values[0], str):
            return "", None  # not an event we know: the caller skips it
        return values[0], values[1]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
