"""Crash convergence (p2 builds it): a fleet found on mixed versions at the start of a deploy or rollback is
said so and converged first. Until then a no-op, so that ``fleet.deploy`` already calls it where it belongs."""

from __future__ import annotations

from typing import Any


def converge_if_mixed(session: Any) -> None:
    """STUB: converges nothing yet."""
