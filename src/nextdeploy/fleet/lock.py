"""The fleet lock (p2 builds it: a ``nextdeploy host lock`` session held on every host through a deploy or
rollback, exit 12). Until then a no-op, so that ``fleet.deploy`` already calls it where it belongs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def fleet_lock(session: Any) -> Iterator[None]:
    """Held around a whole fleet deploy or rollback. STUB: takes no lock yet."""
    yield
