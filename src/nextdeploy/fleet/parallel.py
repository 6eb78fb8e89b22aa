"""Running one piece of work on every host at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

MAX_PARALLEL = 16  # hosts worked on at once (each holds one ssh connection and one thread)


def on_every_host(hosts: Sequence[str], work: Callable[[str], T]) -> list[T]:
    """``work(host)`` for every host at once, the results in ``hosts``' order. Every host's work finishes
    before the first error (in ``hosts``' order) is raised: nothing goes on behind the caller's back."""
    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts)), thread_name_prefix="fleet") as pool:
        futures = [pool.submit(work, host) for host in hosts]
    return [future.result() for future in futures]
