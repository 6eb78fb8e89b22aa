"""Caches that outlive one release, and what ISR does with several PM2 instances.

Image cache: Next keeps optimised images in ``<app>/.next/cache/images``. A new release would start cold
and re-run sharp for every image, so by default (``[release] share_image_cache = true``) that folder is a
link to ``<root>/shared/cache/images``, shared by all releases. Entries are keyed by the image URL, width,
quality and format (statically imported images carry a content hash in their URL), and each entry has its
own expiry, so sharing is safe; one caveat: a ``public/`` image replaced under the same name may be served
from the cache until that entry expires (``images.minimumCacheTTL``, or the image's own max-age).

ISR: with the default cache handler every worker keeps its own in-memory cache (``cacheMaxMemorySize``,
50 MB by default) in front of the files in the release. With more than one instance, a revalidation
(time-based, ``revalidatePath`` or ``revalidateTag``) happens in the process that served it only, so
workers can answer with different versions of a page until each has revalidated.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nextdeploy.core.paths import ReleaseLayout
from nextdeploy.plans.ops import MakeDirs, Op, Remove, Symlink


def image_cache_dir(shared_dir: Path) -> Path:
    return shared_dir / "cache" / "images"


def image_cache_ops(shared_dir: Path, layout: ReleaseLayout) -> list[Op]:
    """Make the release's ``.next/cache/images`` a link to the shared image cache."""
    link = layout.next_dir / "cache" / "images"
    return [MakeDirs(image_cache_dir(shared_dir)), MakeDirs(link.parent), Remove(link),
            Symlink(str(image_cache_dir(shared_dir)), link)]


def uses_isr(next_config: dict[str, Any], prerender_manifest: dict[str, Any],
             revalidates_in_source: Callable[[], bool] = lambda: False) -> bool:
    """Whether the app revalidates what its workers cache (heuristic, from the build and its source).

    ``cacheComponents``/``useCache``; a prerendered route or a dynamic route's fallback with a time-based
    revalidation; or revalidation in its source (on demand: ``revalidatePath``/``revalidateTag``..., or
    ``revalidate: <seconds>`` for fetches). A page prerendered once and never revalidated is the same in
    every worker: no reason to warn."""
    experimental = next_config.get("experimental") or {}
    if next_config.get("cacheComponents") or (isinstance(experimental, dict) and experimental.get("useCache")):
        return True
    routes = prerender_manifest.get("routes") or {}
    dynamic = prerender_manifest.get("dynamicRoutes") or {}
    timed = [entry.get("initialRevalidateSeconds") for entry in routes.values() if isinstance(entry, dict)]
    timed += [entry.get("fallbackRevalidate") for entry in dynamic.values() if isinstance(entry, dict)]
    if any(isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0 for seconds in timed):
        return True
    return revalidates_in_source()


def isr_warning(next_config: dict[str, Any], prerender_manifest: dict[str, Any], instances: int,
                revalidates_in_source: Callable[[], bool] = lambda: False) -> str | None:
    """The warning for several instances each with its own ISR cache, or None when it does not apply.
    ``revalidates_in_source`` is asked only when the build alone does not tell (it reads the source)."""
    if instances <= 1 or not uses_isr(next_config, prerender_manifest, revalidates_in_source):
        return None
    handlers = next_config.get("cacheHandlers")
    shared_handler = bool(next_config.get("cacheHandler")) or (isinstance(handlers, dict) and any(handlers.values()))
    memory = next_config.get("cacheMaxMemorySize")
    if shared_handler and memory == 0:
        return None
    if not shared_handler:
        why = "no cacheHandler/cacheHandlers is configured"
    else:
        why = f"cacheMaxMemorySize is {memory}, not 0"
    return (
        f"{instances} instances and {why}: each worker keeps its own in-memory ISR cache, so a revalidation "
        "(time-based, revalidatePath or revalidateTag) happens per process and workers may serve different "
        "versions of a page until each has revalidated; for one shared cache set a cacheHandler (and "
        "cacheHandlers for 'use cache') with cacheMaxMemorySize: 0 in next.config"
    )
