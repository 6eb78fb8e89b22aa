"""The PM2 daemon socket client: AMP framing and the reply shapes (the real daemon: test_lifecycle)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nextdeploy.pm2 import rpc as pm2rpc
from nextdeploy.pm2.rpc import RpcUnavailable, decode_frame, encode_frame


@given(st.lists(st.binary(max_size=300), max_size=15), st.binary(max_size=20))
def test_frames_round_trip_and_wait_for_all_bytes(parts: list[bytes], trailing: bytes) -> None:
    frame = encode_frame(parts)
    assert decode_frame(frame + trailing) == (parts, len(frame))
    for cut in range(len(frame)):
        assert decode_frame(frame[:cut]) is None


def test_a_frame_of_another_protocol_version_is_refused() -> None:
    with pytest.raises(RpcUnavailable):
        decode_frame(bytes([2 << 4 | 1]) + b"\0\0\0\1x")


def test_values_are_packed_like_amp_message() -> None:
    assert pm2rpc.pack("id:1") == b"s:id:1"
    assert pm2rpc.unpack(pm2rpc.pack({"a": [1, None]})) == {"a": [1, None]}
    assert pm2rpc.unpack(b"raw") == b"raw"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A one-shot fake daemon on a unix socket; the test sets the reply it sends (in two writes)."""
    path = tmp_path / "rpc.sock"
    replies: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            request = b""
            while decode_frame(request) is None:
                request += connection.recv(4096)
            parts, _ = decode_frame(request)  # type: ignore[misc]
            replies.append(parts[0])
            reply = replies[0] if len(replies) > 1 else b""
            if reply:
                connection.sendall(reply[:3])
                connection.sendall(reply[3:])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, replies
    server.close()
    thread.join(timeout=5)


def reply(*values: object) -> bytes:
    return encode_frame([pm2rpc.pack(value) for value in values])


def test_call_sends_a_call_and_reads_a_split_reply(daemon: tuple[Path, list[bytes]]) -> None:
    path, replies = daemon
    replies.append(reply({"args": [[{"name": "hello", "pid": 7}]]}, "nextdeploy:0"))
    assert pm2rpc.process_list(path.parent) == [{"name": "hello", "pid": 7}]
    assert json.loads(replies[1][2:]) == {"type": "call", "method": "getMonitorData", "args": [{}]}


@pytest.mark.parametrize("answer", [
    reply({"error": "method \"getMonitorData\" does not exist"}, "nextdeploy:0"),
    reply({"args": [[]]}, "someone-else:3"),
    reply({"args": "nope"}, "nextdeploy:0"),
    encode_frame([b"j:{not json", b"s:nextdeploy:0"]),
])
def test_unexpected_replies_mean_use_the_cli(daemon: tuple[Path, list[bytes]], answer: bytes) -> None:
    path, replies = daemon
    replies.append(answer)
    with pytest.raises(RpcUnavailable):
        pm2rpc.process_list(path.parent)


def test_no_daemon_means_use_the_cli(tmp_path: Path) -> None:
    with pytest.raises(RpcUnavailable):
        pm2rpc.process_list(tmp_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "rpc.sock"))  # a socket file left by a dead daemon: connect is refused
    stale.close()
    with pytest.raises(RpcUnavailable):
        pm2rpc.process_list(tmp_path)


def test_the_event_stream_reads_split_frames_skips_odd_ones_and_times_out(tmp_path: Path) -> None:
    path = tmp_path / "pub.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    ready = reply("process:msg", {"raw": "ready", "process": {"pm_id": 1}})
    stream = (reply("log:out", {"data": "x"}) + encode_frame([b"s:odd"]) + ready)

    def publish() -> None:
        connection, _ = server.accept()
        with connection:
            for cut in range(0, len(stream), 7):  # 7-byte writes: frames split anywhere
                connection.sendall(stream[cut:cut + 7])
            connection.recv(1)  # until the reader closes

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    with pm2rpc.EventStream(path) as events:
        assert events.next_event(timeout=5) == ("log:out", {"data": "x"})
        assert events.next_event(timeout=5) == ("", None)  # not an [event, data] frame
        assert events.next_event(timeout=5) == ("process:msg", {"raw": "ready", "process": {"pm_id": 1}})
        assert events.next_event(timeout=0.1) is None
    thread.join(timeout=5)
    server.close()
    with pytest.raises(RpcUnavailable):
        pm2rpc.EventStream(tmp_path / "no-daemon.sock")
