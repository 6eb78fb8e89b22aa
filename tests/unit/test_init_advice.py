"""`init`'s advice, checked against the app: the config file's language and module system, an existing
`output`, cacheComponents, monorepo roots, the health route in the app's style, the package manager's own
commands, the installed Next.js version, --apply."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from nextdeploy.cli.main import main
from nextdeploy.core.errors import ExitCode


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def make_app(directory: Path, config_name: str | None = "next.config.js", config: str = "module.exports = {}\n",
             files: dict[str, str] | None = None, **package: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "package.json").write_text(json.dumps(
        {"name": "web", "dependencies": {"next": "16.4.6"}, **package}))
    if config_name:
        (directory / config_name).write_text(config)
    for name, text in (files or {}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


def init(capsys: pytest.CaptureFixture[str], app: Path, *args: str) -> tuple[int, str, str, Path]:
    target = app.parent / f"{app.name}-nextdeploy.toml"
    code, out, err = run(capsys, "init", str(app), "-c", str(target), "--force", *args)
    return code, out, err, target


UNTYPED_TS = """import type { NextConfig } from "next";

const nextConfig = {
  cacheComponents: true,
};

function withDefaults(config: NextConfig): NextConfig {
  return config;
}

export default withDefaults(nextConfig);
"""


def test_typescript_untyped_object_gets_as_const(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = make_app(tmp_path / "web", "next.config.ts", UNTYPED_TS, files={"tsconfig.json": "{}"})
    code, out, _, _ = init(capsys, app)
    assert code == 0
    assert 'add `output: "standalone" as const,` to the config object in next.config.ts' in out
    assert '+  output: "standalone" as const,' in out  # the diff --apply would make
    assert (app / "next.config.ts").read_text() == UNTYPED_TS  # nothing changed without --apply


@pytest.mark.parametrize("config", [
    'import type { NextConfig } from "next";\nconst nextConfig: NextConfig = {\n  reactStrictMode: true,\n};\n'
    "export default nextConfig;\n",
    'const config = {\n  reactStrictMode: true,\n} satisfies NextConfig;\nexport default config;\n',
])
def test_typescript_typed_object_gets_a_plain_literal(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      config: str) -> None:
    app = make_app(tmp_path / "web", "next.config.ts", config, files={"tsconfig.json": "{}"})
    code, out, _, _ = init(capsys, app, "--apply")
    assert code == 0 and "as const" not in out
    assert '  output: "standalone",\n  reactStrictMode: true,' in (app / "next.config.ts").read_text()


def test_esm_monorepo_config_uses_import_meta_url(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "pnpm-workspace.yaml").write_text("packages: ['apps/*']\n")
    (tmp_path / "package.json").write_text('{"name": "root", "private": true}')
    (tmp_path / "pnpm-lock.yaml").write_text("")
    config = "/** @type {import('next').NextConfig} */\nconst nextConfig = {\n  output: 'standalone',\n}\n\n" \
             "export default nextConfig\n"
    app = make_app(tmp_path / "apps" / "web", "next.config.mjs", config)
    code, out, _, _ = init(capsys, tmp_path, "--apply")  # the root: its one app is found
    assert code == 0 and "its Next.js app is apps/web" in out
    changed = (app / "next.config.mjs").read_text()
    assert changed.startswith("import { fileURLToPath } from 'node:url'\n")  # no semicolons: the file has none
    assert "  outputFileTracingRoot: fileURLToPath(new URL('../../', import.meta.url)),\n" in changed
    assert "__dirname" not in changed and "__dirname" not in out


@pytest.mark.parametrize(("config", "expected"), [
    ("module.exports = {\n  output: 'standalone',\n}\n",
     "  outputFileTracingRoot: require('node:path').join(__dirname, '../../'),\n"),
    ('const path = require("path");\nmodule.exports = {\n  output: "standalone",\n};\n',
     '  outputFileTracingRoot: path.join(__dirname, "../../"),\n'),
])
def test_cjs_monorepo_config_uses_dirname(capsys: pytest.CaptureFixture[str], tmp_path: Path, config: str,
                                          expected: str) -> None:
    (tmp_path / "pnpm-workspace.yaml").write_text("packages: ['apps/*']\n")
    (tmp_path / "package.json").write_text('{"name": "root"}')
    app = make_app(tmp_path / "apps" / "web", config=config)
    code, _, _, _ = init(capsys, app, "--apply")
    assert code == 0 and expected in (app / "next.config.js").read_text()


def test_module_system_of_each_config_file(tmp_path: Path) -> None:
    from nextdeploy.nextjs.nextconfig import read_next_config

    def esm(name: str, text: str, package_type: str | None = None, major: int | None = 16) -> bool:
        path = tmp_path / name
        path.write_text(text)
        return read_next_config(path, package_type, major).esm

    assert esm("next.config.mjs", "export default {}")
    assert not esm("next.config.cjs", "module.exports = {}")
    assert not esm("next.config.js", "module.exports = {}")
    assert esm("next.config.js", "module.exports = {}", package_type="module")
    assert esm("next.config.js", "export default {}")  # ESM syntax: Node loads it as a module
    assert esm("next.config.ts", "export default {}")
    assert not esm("next.config.ts", "export default {}", major=15)  # compiled to CommonJS (next.js#71705)


def test_health_route_with_cache_components(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = make_app(tmp_path / "web", "next.config.mjs", "export default { output: 'standalone', "
                   "cacheComponents: true };\n", files={"app/page.jsx": 'import x from "./x";\n'})
    code, out, _, _ = init(capsys, app, "--apply")
    assert code == 0 and "cacheComponents is on" in out
    route = (app / "app" / "api" / "health" / "route.js").read_text()
    assert route == ('import { connection } from "next/server";\n\nexport async function GET() {\n'
                     '  await connection();\n  return Response.json({ status: "ok" });\n}\n')


@pytest.mark.parametrize(("files", "version", "route", "has", "lacks"), [
    ({"tsconfig.json": "{}", "src/app/page.tsx": "import a from 'a'\n"}, "16.4.6", "src/app/api/health/route.ts",
     "import { connection } from 'next/server'\n", ";"),
    ({"app/layout.jsx": ""}, "^14.2.3", "app/api/health/route.js", 'export const dynamic = "force-dynamic";',
     "connection"),
    ({"pages/index.tsx": "", "tsconfig.json": "{}"}, "15.1.0", "pages/api/health.ts",
     "export default function handler(_req: NextApiRequest, res: NextApiResponse) {", "connection"),
    ({"src/pages/index.js": ""}, "15.1.0", "src/pages/api/health.js", "res.status(200).json", "import"),
])
def test_health_route_in_the_apps_own_style(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            files: dict[str, str], version: str, route: str, has: str,
                                            lacks: str) -> None:
    app = make_app(tmp_path / "web", config='module.exports = { output: "standalone" }', files=files,
                   dependencies={"next": version})
    code, out, _, _ = init(capsys, app, "--apply")
    assert code == 0 and f"created {app / route}" in out
    text = (app / route).read_text()
    assert has in text and lacks not in text


def test_an_existing_route_with_segment_config_under_cache_components(capsys: pytest.CaptureFixture[str],
                                                                     tmp_path: Path) -> None:
    app = make_app(tmp_path / "web", config="module.exports = { output: 'standalone', cacheComponents: true }",
                   files={"app/api/health/route.js": 'export const dynamic = "force-dynamic";\n'})
    code, out, _, _ = init(capsys, app)
    assert code == 0 and "health route exports route segment config, which Next rejects" in out
    (app / "app" / "api" / "health" / "route.js").write_text('export const runtime = "nodejs";\n')
    assert "health route exports route segment config" in init(capsys, app)[1]  # even nodejs (Next 16's guide)


@pytest.mark.parametrize(("output", "build_env"), [
    ("process.env.NEXT_OUTPUT", {"NEXT_OUTPUT": "standalone"}),
    ("process.env.BUILD_STANDALONE === 'true' ? 'standalone' : undefined", {"BUILD_STANDALONE": "true"}),
    ("process.env['STANDALONE'] ? 'standalone' : undefined", {"STANDALONE": "1"}),
])
def test_output_read_from_an_env_var(capsys: pytest.CaptureFixture[str], tmp_path: Path, output: str,
                                     build_env: dict[str, str]) -> None:
    app = make_app(tmp_path / "web", config=f"module.exports = {{\n  output: {output},\n}}\n")
    code, out, _, target = init(capsys, app, "--apply")
    assert code == 0
    assert "standalone output is not set" not in out and f"sets it from `{output}` (line 2)" in out
    assert tomllib.loads(target.read_text())["app"]["build_env"] == build_env
    assert "output" in (app / "next.config.js").read_text() and "standalone\"" not in out.split("changes")[-1]


def test_output_set_in_code_under_a_condition(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = ('const nextConfig = {};\nif (process.env.DOCKER === "yes") nextConfig.output = "standalone";\n'
              "module.exports = nextConfig;\n")
    app = make_app(tmp_path / "web", config=config)
    code, out, _, target = init(capsys, app)
    assert code == 0 and "standalone output is not set" not in out and "(line 2)" in out
    assert tomllib.loads(target.read_text())["app"]["build_env"] == {"DOCKER": "yes"}


def test_output_from_code_init_cannot_read(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = make_app(tmp_path / "web", config="module.exports = { output: pick(process.env.MODE) }\n")
    code, out, _, target = init(capsys, app)
    assert code == 0 and "set MODE in [app] build_env" in out
    assert "build_env" not in tomllib.loads(target.read_text())["app"]


def test_static_export_and_commented_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = make_app(tmp_path / "a", config="module.exports = {\n  output: 'export',\n}\n")
    assert "change `output: 'export'` to `output: \"standalone\"` in next.config.js (line 2)" in init(capsys, app)[1]
    app = make_app(tmp_path / "b", config="module.exports = {\n  // output: 'standalone',\n}\n")
    assert "standalone output is not set" in init(capsys, app)[1]  # a comment is not a setting
    from nextdeploy.nextjs.nextconfig import mask

    assert mask("a /* 'x' */ 'y' // z") == "a           ' '     "


def test_an_app_without_next_config_gets_one(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = make_app(tmp_path / "web", None, files={"tsconfig.json": "{}", "app/page.tsx": ""})
    code, _, _, _ = init(capsys, app, "--apply")
    assert code == 0
    assert 'const nextConfig: NextConfig = {\n  output: "standalone",\n};' in (app / "next.config.ts").read_text()


def test_apply_never_overwrites_and_keeps_an_existing_config(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    app = make_app(tmp_path / "web", config="module.exports = { output: 'standalone' }")
    target = tmp_path / "nextdeploy.toml"
    target.write_text("# mine\n")
    code, out, _ = run(capsys, "init", str(app), "-c", str(target), "--apply")
    assert code == 0 and target.read_text() == "# mine\n" and "kept" in out
    assert (app / "app" / "api" / "health" / "route.js").is_file()
    code, out, _ = run(capsys, "init", str(app), "-c", str(target), "--apply")
    assert code == 0 and "health route: app/api/health/route.js" in out and "created" not in out
    code, _, err = run(capsys, "init", str(app), "-c", str(target))
    assert code == ExitCode.CONFIG and "--force" in err  # without --apply, as before


def test_monorepo_root_with_several_apps(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text('{"name": "root", "workspaces": ["apps/*"]}')
    (tmp_path / "package-lock.json").write_text("{}")
    make_app(tmp_path / "apps" / "web")
    make_app(tmp_path / "apps" / "docs")
    (tmp_path / "apps" / "docs" / "node_modules" / "x").mkdir(parents=True)
    make_app(tmp_path / "apps" / "docs" / "node_modules" / "x", name="dep")  # never an app
    code, _, err = run(capsys, "init", str(tmp_path), "-c", str(tmp_path / "n.toml"))
    assert code == ExitCode.PROJECT
    assert err.strip() == (f"error: {tmp_path} is a monorepo root with 2 Next.js apps: apps/docs, apps/web "
                           f"(fix: say which one: nextdeploy init {tmp_path} --path apps/docs)")
    code, out, _ = run(capsys, "init", str(tmp_path), "--path", "apps/web", "-c", str(tmp_path / "n.toml"))
    assert code == 0 and "package manager: npm (package-lock.json)" in out
    config = tomllib.loads((tmp_path / "n.toml").read_text())
    assert config["app"]["path"] == "apps/web" and config["app"]["source"] == "."
    assert '# build_command = "npm run build"' in (tmp_path / "n.toml").read_text()
    code, _, err = run(capsys, "init", str(tmp_path), "--path", "../elsewhere", "-c", str(tmp_path / "m.toml"))
    assert code == ExitCode.USAGE and "--path" in err


def test_a_folder_without_any_next_app(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text('{"name": "x"}')
    code, _, err = run(capsys, "init", str(tmp_path), "-c", str(tmp_path / "n.toml"))
    assert code == ExitCode.PROJECT and "--path" in err and err.count("\n") == 1


def test_version_installed_or_range(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = make_app(tmp_path / "web", dependencies={"next": "^16.0.10"})
    out = init(capsys, app)[1]
    assert "next ^16.0.10 in package.json (a range: not installed here" in out and "Next.js ^16" not in out
    exact = make_app(tmp_path / "exact", dependencies={"next": "15.6.0-canary.59"})
    assert f"Next.js 15.6.0-canary.59 app at {exact} (from package.json: not installed here)" in init(capsys, exact)[1]
    # Hoisted to the workspace root by npm or yarn: still the installed one.
    (tmp_path / "package.json").write_text('{"workspaces": ["web"]}')
    (tmp_path / "node_modules" / "next").mkdir(parents=True)
    (tmp_path / "node_modules" / "next" / "package.json").write_text('{"version": "16.1.2"}')
    assert f"Next.js 16.1.2 app at {app}" in init(capsys, app)[1]


def test_a_yarn_app_is_told_its_own_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = make_app(tmp_path / "web", config="module.exports = { output: 'standalone' }")
    (app / "yarn.lock").write_text("")
    code, out, _, target = init(capsys, app)
    text = target.read_text()
    assert code == 0 and "pnpm build" not in text and "pnpm" not in out
    assert '# build_command = "yarn build"' in text and 'package_manager = "yarn"' in text


def test_the_configs_comments_are_aligned(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = make_app(tmp_path / "web", config="module.exports = { output: 'standalone' }",
                   files={"app/page.jsx": ""})
    target = init(capsys, app, "--root", "/srv/a-rather-long-name-for-the-root")[3]
    columns = {line.index("  # ") + 2 for line in target.read_text().splitlines()
               if re.match(r"^[a-z#]", line) and "  # " in line and not line.startswith("# ")}
    continued = {len(line) - len(line.lstrip()) for line in target.read_text().splitlines()
                 if line.startswith("   ") and line.lstrip().startswith("#")}
    assert len(columns) == 1 and continued == columns, (columns, continued)


def test_middleware_that_may_catch_the_health_route(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    proxy = 'export function proxy(request) {\n  return Response.redirect(new URL("/login", request.url));\n}\n'
    app = make_app(tmp_path / "web", config="module.exports = { output: 'standalone' }",
                   files={"src/proxy.js": proxy})
    assert "note: src/proxy.js runs before every route it matches" in init(capsys, app)[1]
    (app / "src" / "proxy.js").write_text(proxy + 'export const config = { matcher: ["/((?!api).*)"] };\n')
    assert "note:" not in init(capsys, app)[1]


BLOG_STARTER = """const output = process.env.EXPORT ? 'export' : undefined
const basePath = process.env.BASE_PATH || undefined

/** @type {import('next').NextConfig} */
const nextConfig = {
  output,
  basePath,
  reactStrictMode: true,
}

export default plugins.reduce((acc, next) => next(acc), nextConfig)
"""


def test_output_shorthand_from_a_variable_that_never_gives_standalone(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path) -> None:
    # As in a popular blog starter: `{ output }` from an env var that gives "export" or nothing.
    app = make_app(tmp_path / "web", "next.config.mjs", BLOG_STARTER)
    code, out, _, target = init(capsys, app, "--apply")
    assert code == 0 and "standalone output is not set" not in out
    assert ("sets output from `process.env.EXPORT ? 'export' : undefined` (line 1), which never gives "
            "\"standalone\": change it so it does (e.g. `process.env.EXPORT ? 'export' : 'standalone'`)") in out
    assert (app / "next.config.mjs").read_text() == BLOG_STARTER  # no second output key added
    assert "build_env" not in tomllib.loads(target.read_text())["app"]  # no env var gives "standalone"


def test_mask_skips_regex_literals_and_keeps_strings_apart() -> None:
    from nextdeploy.nextjs.nextconfig import mask

    text = "const a = x.replace(/'/g, '') // output: 'export'\nconst b = 4 / 2 / 1; const c = 'output: x'"
    masked = mask(text)
    assert len(masked) == len(text) and "output" not in masked and "/'/g" in masked and "4 / 2 / 1" in masked


def test_health_route_named_for_custom_page_extensions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = "module.exports = {\n  output: 'standalone',\n  pageExtensions: ['page.tsx', 'page.ts'],\n}\n"
    app = make_app(tmp_path / "web", config=config, files={"tsconfig.json": "{}", "app/page.page.tsx": ""})
    assert init(capsys, app, "--apply")[0] == 0 and (app / "app" / "api" / "health" / "route.page.ts").is_file()
    assert "health route: app/api/health/route.page.ts" in init(capsys, app)[1]  # found the next time


def test_monorepo_root_that_depends_on_next_itself(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # next hoisted into the root's devDependencies, and a workspace library depending on next: neither is an app.
    (tmp_path / "package.json").write_text('{"name": "root", "workspaces": ["apps/*", "packages/*"], '
                                           '"devDependencies": {"next": "16.4.6"}}')
    make_app(tmp_path / "apps" / "web", files={"app/page.tsx": ""})
    make_app(tmp_path / "packages" / "ui", None, files={"index.ts": ""})
    code, out, _ = run(capsys, "init", str(tmp_path), "-c", str(tmp_path / "n.toml"))
    assert code == 0 and "its Next.js app is apps/web" in out
    assert not (tmp_path / "next.config.mjs").exists()
