"""Bounded load on a site while a command runs, and the check that none of it failed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nextdeploy.demo.loadgen import BackgroundLoad, LoadResult
from support.site import Site

RATE = 200  # requests per second
MAX_SECONDS = 120  # hard bound on every load run; each stops TAIL_SECONDS after the body returns
TAIL_SECONDS = 2.0


@contextmanager
def load_on(site: Site, mode: str = "keepalive", path: str = "/api/health") -> Iterator[dict[str, Any]]:
    """Load on the public port while the body runs and TAIL_SECONDS after; yields a dict that gets the result
    under "load"."""
    box: dict[str, Any] = {}
    load = BackgroundLoad(site.url + path, rate=RATE, duration=MAX_SECONDS, mode=mode, connections=16)
    load.start()
    try:
        yield box
        time.sleep(TAIL_SECONDS)
    finally:
        load.stop()
        box["load"] = load.result(timeout=MAX_SECONDS + 30)


def no_failures(load: LoadResult) -> None:
    """Assert that the load ran (at least 2 s worth) and that none of its requests failed."""
    assert load.total >= RATE * 2, f"too little load to prove anything: {load.total} requests"
    assert load.failed == 0, f"{load.failed} of {load.total} requests failed: {load.errors()}"
