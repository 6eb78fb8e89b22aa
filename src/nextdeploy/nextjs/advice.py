"""What ``init`` advises changing in an app so that it deploys, as exact file changes that build.

Pure: reads the app's files, returns changes (``FileChange``: the path, its text before and after) and
the lines to print. ``init --apply`` hands the changes to the executor; without it they are shown as diffs.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from nextdeploy.nextjs.nextconfig import NextConfig
from nextdeploy.plans.ops import MakeDirs, Op, WriteFile

HEALTH_PATH = "/api/health"


@dataclass(frozen=True)
class FileChange:
    path: Path
    before: str | None  # None: a new file
    after: str
    mode: int = 0o644

    def diff(self, base: Path) -> list[str]:
        name = self.path.relative_to(base).as_posix() if self.path.is_relative_to(base) else str(self.path)
        lines = difflib.unified_diff((self.before or "").splitlines(), self.after.splitlines(),
                                     "/dev/null" if self.before is None else f"a/{name}", f"b/{name}",
                                     lineterm="", n=2)
        return list(lines)

    def ops(self) -> list[Op]:
        return [MakeDirs(self.path.parent), WriteFile(self.path, self.after, self.mode)]


@dataclass(frozen=True)
class CodeStyle:
    semicolons: bool
    quote: str


def code_style(app_dir: Path) -> CodeStyle:
    """Semicolons and quotes as the app's own layout, pages and routes write their imports."""
    files = [path for base in ("app", "src/app", "pages", "src/pages") if (app_dir / base).is_dir()
             for path in sorted((app_dir / base).rglob("*.*"))[:40]
             if path.suffix in (".ts", ".tsx", ".js", ".jsx", ".mjs")]
    with_semi = without = single = double = 0
    for path in files[:20]:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            found = re.match(r"""\s*import\s.*?from\s+(["'])[^"']+\1(;?)\s*$""", line) or re.match(
                r"""\s*import\s+(["'])[^"']+\1(;?)\s*$""", line)
            if found:
                single += found.group(1) == "'"
                double += found.group(1) == '"'
                with_semi += found.group(2) == ";"
                without += found.group(2) == ""
    return CodeStyle(semicolons=with_semi >= without, quote="'" if single > double else '"')


def health_route_file(app_dir: Path, typescript: bool, page_extensions: tuple[str, ...] = ()) -> Path:
    """Where the health route goes: the app's App Router folder, else its pages/api; named with an extension
    the app's ``pageExtensions`` accepts (``route.page.ts`` for ``["page.tsx", "page.ts"]``)."""
    extension = "ts" if typescript else "js"
    if page_extensions and extension not in page_extensions:
        fitting = [ext for ext in page_extensions if ext.split(".")[-1] == extension] or \
            [ext for ext in page_extensions if ext.split(".")[-1] == f"{extension}x"]
        extension = fitting[0] if fitting else extension
    for base in ("app", "src/app"):
        if (app_dir / base).is_dir():
            return app_dir / base / "api" / "health" / f"route.{extension}"
    for base in ("pages", "src/pages"):
        if (app_dir / base).is_dir():
            return app_dir / base / "api" / f"health.{extension}"
    base = "src/app" if (app_dir / "src").is_dir() else "app"
    return app_dir / base / "api" / "health" / f"route.{extension}"


def health_route_source(route: Path, typescript: bool, next_major: int | None, cache_components: bool,
                        style: CodeStyle) -> str:
    """A health route that builds with the app's settings and passes common lint.

    App Router: ``await connection()`` (Next 15+) makes the route render per request in every mode; the
    segment config ``export const dynamic`` is rejected by Next when ``cacheComponents`` is on, and without
    either a GET route is prerendered at build time under ``cacheComponents`` (a static answer). Next 14 has
    no ``connection()``: ``dynamic = "force-dynamic"`` there."""
    semi = ";" if style.semicolons else ""
    q = style.quote
    if route.parent.name == "api":  # pages/api/health.*: always per request
        if typescript:
            return (f"import type {{ NextApiRequest, NextApiResponse }} from {q}next{q}{semi}\n\n"
                    "export default function handler(_req: NextApiRequest, res: NextApiResponse) {\n"
                    f"  res.status(200).json({{ status: {q}ok{q} }}){semi}\n}}\n")
        return ("export default function handler(_req, res) {\n"
                f"  res.status(200).json({{ status: {q}ok{q} }}){semi}\n}}\n")
    if next_major is not None and next_major < 15 and not cache_components:
        return (f"export const dynamic = {q}force-dynamic{q}{semi}\n\n"
                "export async function GET() {\n"
                f"  return Response.json({{ status: {q}ok{q} }}){semi}\n}}\n")
    return (f"import {{ connection }} from {q}next/server{q}{semi}\n\n"
            "export async function GET() {\n"
            f"  await connection(){semi}\n"
            f"  return Response.json({{ status: {q}ok{q} }}){semi}\n}}\n")


def tracing_root_expression(config: NextConfig, up: str) -> tuple[str, str | None]:
    """The ``outputFileTracingRoot`` value for a workspace root ``up`` (e.g. ``../../``) above the app, in
    the config file's module system, and the import it needs (None: none)."""
    q = config.quote
    if config.esm:
        wanted = f"import {{ fileURLToPath }} from {q}node:url{q};"
        has = re.search(r"\bfileURLToPath\b", config.text)
        return f"fileURLToPath(new URL({q}{up}{q}, import.meta.url))", None if has else wanted
    if config.language == "ts":
        has = re.search(r"^import\s+path\s+from", config.text, re.M)
        return f"path.join(__dirname, {q}{up}{q})", None if has else f"import path from {q}node:path{q};"
    if re.search(r"\b(?:const|let|var)\s+path\s*=\s*require\(", config.text):
        return f"path.join(__dirname, {q}{up}{q})", None
    return f"require({q}node:path{q}).join(__dirname, {q}{up}{q})", None


def config_change(config: NextConfig, add_output: bool, tracing_up: str | None) -> FileChange | None:
    """next.config with ``output: "standalone"`` and/or ``outputFileTracingRoot`` added to its exported object
    literal; None when that object cannot be found (the config is a function, or built in code)."""
    if config.path is None or config.object_span is None or not (add_output or tracing_up):
        return None
    text, (open_brace, close_brace) = config.text, config.object_span
    q = config.quote
    properties = []
    if add_output:
        # An untyped object literal in TS widens "standalone" to string, which NextConfig rejects.
        cast = " as const" if config.language == "ts" and not config.typed else ""
        properties.append(f"output: {q}standalone{q}{cast}")
    imports = None
    if tracing_up:
        expression, imports = tracing_root_expression(config, tracing_up)
        properties.append(f"outputFileTracingRoot: {expression}")
    body = text[open_brace + 1:close_brace]
    if "\n" in body:
        line_start = text.rfind("\n", 0, open_brace) + 1
        outer = re.match(r"[ \t]*", text[line_start:]).group()  # type: ignore[union-attr]
        first = re.search(r"\n([ \t]*)\S", body)
        indent = first.group(1) if first else outer + "  "
        insert = "".join(f"\n{indent}{prop}," for prop in properties)
        changed = text[:open_brace + 1] + insert + text[open_brace + 1:]
    elif body.strip():
        changed = text[:open_brace + 1] + " " + ", ".join(properties) + "," + text[open_brace + 1:]
    else:
        changed = text[:open_brace + 1] + " " + ", ".join(properties) + " " + text[close_brace:]
    if imports:
        first_import = re.search(r"^import\s", changed, re.M)
        at = first_import.start() if first_import else 0
        line = imports if config.text.count(";") else imports.rstrip(";")
        changed = changed[:at] + line + ("\n" if first_import else "\n\n") + changed[at:]
    return FileChange(config.path, text, changed, config.path.stat().st_mode & 0o7777)


def new_config_file(app_dir: Path, config: NextConfig, tracing_up: str | None) -> FileChange:
    """A next.config for an app that has none (``config``: what ``read_next_config`` says of no file, with
    the language the app uses)."""
    imports, root = "", ""
    if tracing_up:
        expression, needed = tracing_root_expression(config, tracing_up)
        imports = f"{needed}\n" if needed else ""
        root = f"\n  outputFileTracingRoot: {expression},"
    if config.language == "ts":
        return FileChange(app_dir / "next.config.ts", None,
                          f'{imports}import type {{ NextConfig }} from "next";\n\n'
                          f'const nextConfig: NextConfig = {{\n  output: "standalone",{root}\n}};\n\n'
                          "export default nextConfig;\n")
    return FileChange(app_dir / "next.config.mjs", None,
                      f"{imports}{chr(10) if imports else ''}/** @type {{import('next').NextConfig}} */\n"
                      f'const nextConfig = {{\n  output: "standalone",{root}\n}};\n\nexport default nextConfig;\n')


def package_type(app_dir: Path) -> str | None:
    try:
        value = json.loads((app_dir / "package.json").read_text(encoding="utf-8")).get("type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def up_to(app_path: str) -> str:
    """``../../`` for ``apps/web``: from the app up to the source root."""
    return "../" * len(Path(app_path).parts)
