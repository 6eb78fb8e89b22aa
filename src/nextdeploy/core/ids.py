"""Release ids: sortable by creation time, unique, and valid as a Next.js deployment id.

Next.js accepts at most 32 characters of ``[A-Za-z0-9_-]`` not starting with ``dpl_``; the id is
passed to the build as ``NEXT_DEPLOYMENT_ID``. Shape: ``20261121-064512-123-a1b2`` (UTC, ms, random).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

RELEASE_ID_PATTERN = re.compile(r"^\d{8}-\d{6}-\d{3}-[0-9a-f]{4}$")
DEPLOYMENT_ID_PATTERN = re.compile(r"^(?!dpl_)[A-Za-z0-9_-]{1,32}$")


def new_release_id(now: datetime | None = None, suffix: str | None = None) -> str:
    """A new release id for ``now`` (UTC) with a random 4-hex suffix."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    random_part = suffix if suffix is not None else secrets.token_hex(2)
    return f"{moment:%Y%m%d-%H%M%S}-{moment.microsecond // 1000:03d}-{random_part}"


def is_release_id(value: str) -> bool:
    """Whether ``value`` has the shape of an id made by :func:`new_release_id`."""
    return bool(RELEASE_ID_PATTERN.match(value))


def is_valid_deployment_id(value: str) -> bool:
    """Whether Next.js accepts ``value`` as ``deploymentId`` / ``NEXT_DEPLOYMENT_ID``."""
    return bool(DEPLOYMENT_ID_PATTERN.match(value))
