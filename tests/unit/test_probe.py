"""The HTTP probe says what went wrong on the network in words (status, preflight and verify quote it)."""

from __future__ import annotations

import socket
import threading

from nextdeploy.host.probe import http_get


def test_nothing_listening_is_said_so() -> None:
    with socket.socket() as reserved:  # bound, not listening: connections to it are refused
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        result = http_get("127.0.0.1", port, "/api/health", timeout=2)
    assert result.status is None
    assert result.error == f"connection refused (nothing listens on 127.0.0.1:{port})"


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # listening, never reads: the connect succeeds, no answer comes
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        result = http_get("127.0.0.1", silent.getsockname()[1], "/", timeout=0.3)
    assert result.error == "no answer within 0.3 s"


def test_a_server_that_hangs_up_without_answering() -> None:
    with socket.socket() as rude:
        rude.bind(("127.0.0.1", 0))
        rude.listen()

        def hang_up() -> None:
            connection, _ = rude.accept()
            request = b""
            while b"\r\n\r\n" not in request:  # all of it read: closing now is a FIN, not a reset
                request += connection.recv(4096)
            connection.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        result = http_get("127.0.0.1", rude.getsockname()[1], "/", timeout=2)
        thread.join()
    assert result.error == "the server closed the connection without answering"
