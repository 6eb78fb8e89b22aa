"""Smoke routes (``[health] smoke``): real pages requested during the preflight, beyond the health route.

The health route proves the server boots; it does not prove that pages render or that the static assets
were copied. Each smoke route must answer without a 5xx, and one ``/_next/static`` asset named in the HTML
of the first smoke route that returns HTML must answer 200. ``MODULE_NOT_FOUND`` in the server's output
is caught by the preflight itself.
"""

from __future__ import annotations

import html
import re

from nextdeploy.core.config import HealthConfig
from nextdeploy.core.errors import PreflightError
from nextdeploy.host.probe import ProbeResult, http_get

_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']*?/_next/static/[^"']+)["']""")


def first_static_asset(page: str) -> str | None:
    """The first same-origin ``/_next/static/...`` URL in ``page``'s HTML (``src=`` or ``href=``)."""
    for match in _ASSET.finditer(page):
        url = html.unescape(match.group(1))
        if url.startswith("/") and not url.startswith("//"):
            return url
    return None


def smoke_problem(route: str, result: ProbeResult) -> str | None:
    """Why a smoke route's answer fails the release: no answer, or a 5xx."""
    if result.error is not None:
        return f"GET {route}: {result.error}"
    if result.status is None or result.status >= 500:
        return f"GET {route} answered {result.status}"
    return None


def is_html(result: ProbeResult) -> bool:
    return "text/html" in result.headers.get("content-type", "")


def run_smoke(health: HealthConfig, port: int, host: str = "127.0.0.1") -> list[str]:
    """Request the smoke routes and one static asset; return what was checked. Raises PreflightError."""
    checked: list[str] = []
    problems: list[str] = []
    asset: str | None = None
    for route in health.smoke:
        result = http_get(host, port, route, health.request_timeout)
        problem = smoke_problem(route, result)
        if problem:
            problems.append(problem)
            continue
        checked.append(f"GET {route} -> {result.status}")
        if asset is None and is_html(result):
            asset = first_static_asset(result.body)
    if asset is not None and not problems:
        result = http_get(host, port, asset, health.request_timeout)
        if result.status != 200:
            problems.append(f"GET {asset} (a static asset named by the page) answered "
                            f"{result.status if result.error is None else result.error}")
        else:
            checked.append(f"GET {asset} -> 200")
    if problems:
        raise PreflightError(
            f"smoke route check failed: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint="fix the error in the server output above (the old release is still serving)",
            details=[f"  {problem}" for problem in problems],
        )
    return checked
