"""Concurrent calls to the PM2 daemon's socket: the executor's ``ReloadWorkers``, ``SpawnWorkers`` and
``DeleteWorkers`` ops, several workers at once, and the wait on PM2's event bus for a new worker's 'ready'.

One call per connection (``pm2.rpc``); each function returns the problems it met, one line per worker
(empty: every call went through), and the executor turns them into its ``RunResult``.
"""

from __future__ import annotations

import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Any

from nextdeploy.plans.ops import DeleteWorkers, ReloadWorkers
from nextdeploy.pm2 import rpc as pm2rpc

# How long a reload with ``until_serving`` waits on PM2's bus before it looks at its calls again.
SERVING_POLL = 0.05


def reload_workers(op: ReloadWorkers) -> tuple[list[str], list[Future[str | None]]]:
    """Each reload is one RPC call that returns once the new worker is ready and the old one stopped.

    Returns the problems and, with ``until_serving``, the calls still running (old workers draining)."""
    def reload(pm_id: int) -> str | None:
        try:
            pm2rpc.call(op.socket, "reloadProcessId", {"id": pm_id, "env": {}}, timeout=op.timeout)
        except pm2rpc.RpcUnavailable as exc:
            return f"worker {pm_id}: {exc}"
        return None

    # Subscribed before the first call, so no 'ready' can pass unseen. No bus: wait for the calls.
    events = _pm2_events(op.socket.with_name("pub.sock")) if op.until_serving else None
    try:
        pool = ThreadPoolExecutor(max_workers=max(1, op.at_once))
        calls = {pm_id: pool.submit(reload, pm_id) for pm_id in op.ids}
        pool.shutdown(wait=False)  # the threads end with their calls
        if events is not None:
            _wait_until_serving(calls, events)
    finally:
        if events is not None:
            events.close()
    if events is None or _failed(calls):
        futures_wait(calls.values())  # after a failure too: every call ends, the caller falls back to the CLI
    problems = [problem for call in calls.values() if call.done() and (problem := call.result())]
    if problems:
        return problems, []
    return [], [call for call in calls.values() if not call.done()]


def calls_in_background(socket_path: Path, method: str, calls: list[tuple[Any, ...]]) -> list[str]:
    """Send each call to the daemon now; read the replies in daemon threads, which die with this process
    (the daemon carries out a call whether or not anyone waits for its reply)."""
    problems = []
    for args in calls:
        try:
            sock = pm2rpc.send(socket_path, method, *args)
        except pm2rpc.RpcUnavailable as exc:
            problems.append(f"{method}({', '.join(map(str, args))}): {exc}")
            continue
        sock.settimeout(None)
        threading.Thread(target=_read_and_close, args=(sock,), daemon=True).start()
    return problems


def _read_and_close(sock: socket.socket) -> None:
    with sock:
        try:
            pm2rpc.receive_reply(sock)
        except pm2rpc.RpcUnavailable:
            pass  # whoever sent it watches the process list, not this reply


def delete_workers(op: DeleteWorkers) -> list[str]:
    """Delete the workers at once, each on its own connection; wait for every reply (each worker stopped)."""
    def delete(pm_id: int) -> str | None:
        try:
            pm2rpc.call(op.socket, "deleteProcessId", pm_id, timeout=op.timeout)
        except pm2rpc.RpcUnavailable as exc:
            return f"worker {pm_id}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, len(op.ids))) as pool:
        return [problem for problem in pool.map(delete, op.ids) if problem]


def _pm2_events(path: Path) -> pm2rpc.EventStream | None:
    try:
        return pm2rpc.EventStream(path)
    except pm2rpc.RpcUnavailable:
        return None


def _failed(calls: dict[int, Future[str | None]]) -> bool:
    return any(call.done() and call.result() for call in calls.values())


def _wait_until_serving(calls: dict[int, Future[str | None]], events: pm2rpc.EventStream) -> None:
    """Until each call has ended or its new worker said 'ready' (it serves; PM2 now stops the old one)."""
    ready: set[int] = set()
    while not all(call.done() or pm_id in ready for pm_id, call in calls.items()):
        if _failed(calls):
            return
        try:
            event = events.next_event(timeout=SERVING_POLL)
        except pm2rpc.RpcUnavailable:
            return  # the bus went away: the caller waits for the calls themselves
        if event is not None and (pm_id := readied_worker(*event)) is not None:
            ready.add(pm_id)


def readied_worker(event: str, data: Any) -> int | None:
    """The pm_id of a worker that just told PM2 'ready' (the launcher's ``process.send('ready')``), from an
    event of PM2's bus. In a reload PM2 starts stopping the old worker on this very message."""
    if event != "process:msg" or not isinstance(data, dict) or data.get("raw") != "ready":
        return None
    process = data.get("process")
    pm_id = process.get("pm_id") if isinstance(process, dict) else None
    return pm_id if isinstance(pm_id, int) else None
