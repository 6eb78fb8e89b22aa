"""The example app (``examples/hello``) and its broken variants, for the demo, the bench and the tests.

A variant is the same app with one file changed, so each broken release fails in exactly one way:

    good           serves; ``app/version.js`` says which build this is
    crash-at-boot  the server process exits while starting
    never-listens  the server blocks its event loop before it can answer anything
    health-500     /api/health answers 500
    exit-after-3s  serves, then the process exits 3 s after start
    slow-start     answers only after 10 s (then works: a slow but good release)
    page-throws    /api/health is fine but / answers 500 (caught only by smoke routes)
    health-fails-on-file  serves, but /api/health answers 500 once a file ``health-fails`` appears in
                   the server's directory (a release that fails verify after traffic moved to it)
    redirects      good, plus redirects built from ``request.url`` (a proxy, i.e. middleware, at /go-home and a
                   route handler at /api/redirect) and /api/seen, which echoes the URL and headers the app sees
"""

from __future__ import annotations

import shutil
from pathlib import Path

from nextdeploy.plans.build import IGNORED_IN_SOURCE

VARIANTS = ("good", "crash-at-boot", "never-listens", "health-500", "exit-after-3s", "slow-start", "page-throws",
            "health-fails-on-file", "redirects")

# instrumentation.js register() runs when the Next.js server starts, before it serves requests.
_INSTRUMENTATION = {
    "crash-at-boot": """export async function register() {
  if (process.env.NEXT_RUNTIME === "nodejs") {
    console.error("example: crashing at boot on purpose");
    process.exit(1);
  }
}
""",
    "never-listens": """export async function register() {
  if (process.env.NEXT_RUNTIME === "nodejs") {
    console.error("example: blocking the event loop forever on purpose");
    const cell = new Int32Array(new SharedArrayBuffer(4));
    for (;;) Atomics.wait(cell, 0, 0, 60000);
  }
}
""",
    "exit-after-3s": """export async function register() {
  if (process.env.NEXT_RUNTIME === "nodejs") {
    setTimeout(() => {
      console.error("example: exiting 3 s after start on purpose");
      process.exit(1);
    }, 3000);
  }
}
""",
    "slow-start": """export async function register() {
  if (process.env.NEXT_RUNTIME === "nodejs") {
    await new Promise((resolve) => setTimeout(resolve, 10000));
  }
}
""",
}

_HEALTH_500 = """export const dynamic = "force-dynamic";

export async function GET() {
  return Response.json({ status: "broken" }, { status: 500 });
}
"""

_HEALTH_FAILS_ON_FILE = """import { existsSync } from "node:fs";
import { APP_VERSION } from "../../version";

export const dynamic = "force-dynamic";

export async function GET() {
  const broken = existsSync("health-fails");
  return Response.json({ status: broken ? "broken" : "ok", version: APP_VERSION }, { status: broken ? 500 : 200 });
}
"""

_PAGE_THROWS = """export const dynamic = "force-dynamic";

export default function Home() {
  throw new Error("example: this page throws on purpose");
}
"""

# The "redirects" variant: files added to the app (paths relative to it), removed again by set_version.
_REDIRECTS = {
    "proxy.js": """import { NextResponse } from "next/server";

export function proxy(request) {
  return NextResponse.redirect(new URL("/", request.url));
}

export const config = { matcher: "/go-home" };
""",
    "app/api/redirect/route.js": """export const dynamic = "force-dynamic";

export async function GET(request) {
  return Response.redirect(new URL("/", request.url), 307);
}
""",
    "app/api/seen/route.js": """export const dynamic = "force-dynamic";

export async function GET(request) {
  const headers = Object.fromEntries(
    ["host", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-for"].map(
      (name) => [name, request.headers.get(name)]));
  return Response.json({ url: request.url, headers });
}
""",
}


def example_source() -> Path:
    """The example app: the repository's copy when running from a checkout, else the packaged one."""
    here = Path(__file__).resolve()
    candidates = [here.parents[3] / "examples" / "hello", here.parents[1] / "_examples" / "hello"]
    for candidate in candidates:
        if (candidate / "package.json").is_file():
            return candidate
    raise FileNotFoundError("the example app (examples/hello) is not available in this installation")


def copy_example(destination: Path, version: str = "v1", variant: str = "good") -> Path:
    """Write the example app to ``destination`` (replacing what is there) as ``variant`` of ``version``."""
    shutil.copytree(example_source(), destination, ignore=shutil.ignore_patterns(*IGNORED_IN_SOURCE),
                    dirs_exist_ok=True)
    set_version(destination, version, variant)
    return destination


def set_base_path(app_dir: Path, base_path: str | None) -> None:
    """Serve the app under ``base_path`` (next.config's ``basePath``), or at the root again with None."""
    config = (example_source() / "next.config.mjs").read_text()
    if base_path:
        config = config.replace('output: "standalone",', f'output: "standalone",\n  basePath: "{base_path}",')
    (app_dir / "next.config.mjs").write_text(config)


def set_version(app_dir: Path, version: str, variant: str = "good") -> None:
    """Make ``app_dir`` the given variant of ``version`` (resets any earlier variant)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; pick one of {', '.join(VARIANTS)}")
    original = example_source()
    for relative in ("app/page.jsx", "app/api/health/route.js"):
        shutil.copyfile(original / relative, app_dir / relative)
    (app_dir / "instrumentation.js").unlink(missing_ok=True)
    for relative in _REDIRECTS:
        (app_dir / relative).unlink(missing_ok=True)
    (app_dir / "app" / "version.js").write_text(
        "// The demo and the tests rewrite this line to tell releases apart.\n"
        f'export const APP_VERSION = "{version}";\n'
    )
    if variant in _INSTRUMENTATION:
        (app_dir / "instrumentation.js").write_text(_INSTRUMENTATION[variant])
    elif variant == "health-500":
        (app_dir / "app" / "api" / "health" / "route.js").write_text(_HEALTH_500)
    elif variant == "health-fails-on-file":
        (app_dir / "app" / "api" / "health" / "route.js").write_text(_HEALTH_FAILS_ON_FILE)
    elif variant == "page-throws":
        (app_dir / "app" / "page.jsx").write_text(_PAGE_THROWS)
    elif variant == "redirects":
        for relative, text in _REDIRECTS.items():
            (app_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (app_dir / relative).write_text(text)
