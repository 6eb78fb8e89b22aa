"""The planners' output as literal shell lines (what a dry run prints)."""

from __future__ import annotations

from pathlib import Path

from nextdeploy.core.config import parse_config
from nextdeploy.core.paths import DeployPaths, ReleaseLayout, SourceLayout
from nextdeploy.host.executor import LocalExecutor
from nextdeploy.plans import build, pm2, release
from nextdeploy.plans.ops import CopyTree, Run, Symlink, WriteFile
from nextdeploy.plans.packagemanager import choose_manager


def test_install_and_build_commands() -> None:
    pnpm, npm = choose_manager("pnpm", "pnpm-lock.yaml", "9.0"), choose_manager("npm", "package-lock.json", None)
    assert pnpm.install_argv("pnpm") == ("pnpm", "install", "--frozen-lockfile")
    assert npm.install_argv("npm") == ("npm", "ci", "--no-audit", "--no-fund")
    assert choose_manager("yarn", "yarn.lock", "1").install_argv("yarn") == ("yarn", "install", "--frozen-lockfile")
    assert choose_manager("yarn", "yarn.lock", "8").install_argv("yarn") == ("yarn", "install", "--immutable")
    assert build.build_argv("pnpm", None) == ("pnpm", "run", "build")
    assert build.build_argv("pnpm", "turbo run build") == ("sh", "-c", "turbo run build")


def test_install_and_build_are_niced_and_bounded_by_the_build_timeout(tmp_path: Path) -> None:
    app = parse_config({"app": {"name": "h", "source": "a", "build_nice": 7, "build_timeout": 600},
                        "server": {"root": "r"}}, tmp_path).app
    install = build.install_op(choose_manager("pnpm", "pnpm-lock.yaml", "9.0"), "pnpm", app, Path("/b"), {},
                               Path("/l"))
    built = build.build_op("pnpm", app, Path("/b/app"), {}, Path("/l"))
    assert install.argv == ("pnpm", "install", "--frozen-lockfile") and built.argv == ("pnpm", "run", "build")
    assert (install.nice, install.timeout, built.nice, built.timeout) == (7, 600, 7, 600)


def test_install_and_build_put_the_package_manager_nextdeploy_installed_first_on_path(tmp_path: Path) -> None:
    app = parse_config({"app": {"name": "h", "source": "a"}, "server": {"root": "r"}}, tmp_path).app
    choice = choose_manager("pnpm", "pnpm-lock.yaml", "6.0", "pnpm@8.15.6")
    bin_dir = "/srv/h/tools/pnpm-8.15.6/node_modules/.bin"
    install = build.install_op(choice, f"{bin_dir}/pnpm", app, Path("/b"), {"CI": "1"}, Path("/l"), (bin_dir,))
    built = build.build_op(f"{bin_dir}/pnpm", app, Path("/b"), {"K": "s"}, Path("/l"), frozenset({"K"}), (bin_dir,))
    assert install.render() == (f'(cd /b && PATH={bin_dir}:"$PATH" CI=1 nice -n 10 {bin_dir}/pnpm install '
                                "--frozen-lockfile) >> /l 2>&1")
    assert built.render().startswith(f'(cd /b && PATH={bin_dir}:"$PATH" K=*** nice -n 10 {bin_dir}/pnpm run build')


def test_yarn_berry_keeps_its_cache_under_the_root_unless_the_project_chose_a_folder() -> None:
    berry = choose_manager("yarn", "yarn.lock", "6")
    cache = Path("/srv/h/cache/yarn-berry")
    assert build.install_env({"CI": "1"}, berry, {}, cache) == {"YARN_GLOBAL_FOLDER": str(cache), "CI": "1"}
    assert "YARN_GLOBAL_FOLDER" not in build.install_env({}, berry, {"globalFolder": "/y"}, cache)
    assert build.install_env({"YARN_GLOBAL_FOLDER": "/mine"}, berry, {}, cache) == {"YARN_GLOBAL_FOLDER": "/mine"}
    assert build.install_env({"CI": "1"}, choose_manager("yarn", "yarn.lock", "1"), {}, cache) == {"CI": "1"}


def test_package_manager_is_installed_into_its_prefix_through_a_staging_dir() -> None:
    choice = choose_manager("yarn", "yarn.lock", "6", "yarn@3.8.7")
    prefix = Path("/srv/h/tools/yarn-3.8.7")
    lines = [op.render() for op in build.package_manager_install_ops("/usr/bin/npm", choice, prefix, 300)]
    assert lines == [
        "rm -rf /srv/h/tools/yarn-3.8.7.partial",
        "mkdir -p /srv/h/tools/yarn-3.8.7.partial",
        # A local install in the staging dir, not --prefix (npm would then read <prefix>/etc/npmrc instead of
        # the machine's global npmrc, and lose its registry, proxy or CA settings).
        "write /srv/h/tools/yarn-3.8.7.partial/package.json (mode 644, 18 bytes)",
        "(cd /srv/h/tools/yarn-3.8.7.partial && /usr/bin/npm install --no-audit --no-fund --no-package-lock "
        "@yarnpkg/cli-dist@3.8.7)",
        "rm -rf /srv/h/tools/yarn-3.8.7",
        "mv -T /srv/h/tools/yarn-3.8.7.partial /srv/h/tools/yarn-3.8.7",
    ]


def test_render_hides_secrets() -> None:
    op = Run(("pnpm", "run", "build"), cwd=Path("/b"), env={"KEY": "s3cret", "A": "b c"}, secret_env=frozenset({"KEY"}))
    assert op.render() == "(cd /b && KEY=*** A='b c' pnpm run build)"
    assert "s3cret" not in WriteFile(Path("/k"), "s3cret", 0o600, secret=True).render()


def test_render_hides_credentials_in_urls(tmp_path: Path) -> None:
    op = build.git_mirror_op("git", "https://x-access-token:ghs_s3cret@github.com/a/b.git", Path("/m"), False)
    assert op.render() == "GIT_TERMINAL_PROMPT=0 git clone --mirror --quiet https://***@github.com/a/b.git /m"
    assert op.argv[4] == "https://x-access-token:ghs_s3cret@github.com/a/b.git"  # hidden from view only
    assert "ghp_tok" not in build.git_mirror_op("git", "https://ghp_tok@host/r", Path("/m"), False).render()
    assert build.git_mirror_op("git", "git@github.com:a/b.git", Path("/m"), False).render().endswith(
        "git@github.com:a/b.git /m")  # no credential in an scp-like address


def test_switch_is_temp_link_plus_rename() -> None:
    assert Symlink("releases/r1", Path("/srv/h/current")).render() == (
        "ln -sfn releases/r1 /srv/h/current.tmp && mv -T /srv/h/current.tmp /srv/h/current")


def test_release_assembly_for_a_monorepo() -> None:
    source = SourceLayout(Path("/b/src"), "apps/web")
    layout = ReleaseLayout(Path("/srv/h/releases/r1"), "apps/web")
    ops = release.standalone_release_ops(source, layout, Path("/pkg/launcher.cjs"), has_public=True)
    assert [op.render() for op in ops] == [
        "mv /b/src/apps/web/.next/standalone/* /srv/h/releases/r1/  # dotfiles too",
        "mv /b/src/apps/web/.next/static/* /srv/h/releases/r1/apps/web/.next/static/  # dotfiles too",
        "cp -a /b/src/apps/web/public/. /srv/h/releases/r1/apps/web/public/",
        "cp -p /pkg/launcher.cjs /srv/h/releases/r1/.nextdeploy/launcher.cjs",
    ]
    begin = release.begin_release_ops(layout)
    assert begin[-1] == WriteFile(layout.unfinished_marker, "this release is being assembled; never activate it\n")
    finish = release.finish_release_ops(layout, {"id": "r1"})
    assert finish[-1].render() == "rm -rf /srv/h/releases/r1/.nextdeploy-unfinished"  # the marker goes last


def test_shared_files_in_a_folder_are_linked_into_it(tmp_path: Path) -> None:
    # `shared_files = ["config/local.json"]` is valid: its folder may not exist in the release (it raised
    # FileNotFoundError, exit 1, after the whole build).
    shared = tmp_path / "shared"
    (shared / "config").mkdir(parents=True)
    (shared / "config" / "local.json").write_text("{}")
    (shared / ".env.production").write_text("A=1\n")
    layout = ReleaseLayout(tmp_path / "releases" / "r1", "apps/web")
    layout.app_dir.mkdir(parents=True)
    names = [".env.production", "config/local.json", "absent.json"]
    LocalExecutor().apply_all(release.shared_link_ops(shared, names, {".env.production", "config/local.json"},
                                                      layout))
    assert (layout.app_dir / "config" / "local.json").read_text() == "{}"
    assert (layout.app_dir / ".env.production").is_symlink() and not (layout.app_dir / "absent.json").exists()


def test_directory_export_skips_dependencies_and_build_output() -> None:
    ops = build.export_directory_ops(Path("/repo"), Path("/b/src"))
    assert isinstance(ops[-1], CopyTree) and "node_modules" in ops[-1].ignore and ".next" in ops[-1].ignore


def test_ecosystem_runs_the_launcher_through_current(tmp_path: Path) -> None:
    config = parse_config({"app": {"name": "hello", "source": "."}, "server": {"root": "/srv/hello", "port": 3100,
                                                                             "env": {"API": "x"}}}, tmp_path)
    app = pm2.ecosystem_app(config, DeployPaths(config.root))
    assert app["script"] == ".nextdeploy/launcher.cjs"  # relative to cwd: a root with a space stays one path
    assert app["cwd"] == "/srv/hello/current"
    assert app["exec_mode"] == "cluster" and app["wait_ready"] is True and app["instances"] == 2
    env = app["env"]
    assert isinstance(env, dict) and env["PORT"] == "3100" and env["API"] == "x" and env["NODE_ENV"] == "production"
    assert "preserve-symlinks" not in str(app)
    assert "NEXTDEPLOY_WARM_PATHS" not in env  # no smoke routes: nothing to warm, the env stays as it was
    warm = parse_config({"app": {"name": "hello", "source": "."}, "server": {"root": "/srv/hello"},
                         "health": {"smoke": ["/", "/blog"]}}, tmp_path)
    warm_env = pm2.ecosystem_app(warm, DeployPaths(warm.root))["env"]
    assert isinstance(warm_env, dict) and warm_env["NEXTDEPLOY_WARM_PATHS"] == "/\n/blog"
    source = pm2.ecosystem_source(config, DeployPaths(config.root), {"SECRET": Path("/srv/hello/shared/k")})
    assert "readFileSync(\"/srv/hello/shared/k\"" in source
    assert pm2.reload_argv("pm2", Path("/e.cjs"), "hello") == ("pm2", "reload", "/e.cjs", "--only", "hello",
                                                               "--update-env")


def test_the_launcher_writes_the_app_logs_pm2_only_what_bypasses_it(tmp_path: Path) -> None:
    config = parse_config({"app": {"name": "hello", "source": "."}, "server": {"root": "/srv/hello"},
                           "logs": {"max_size": "20M", "keep": 2}}, tmp_path)
    app = pm2.ecosystem_app(config, DeployPaths(config.root))
    assert app["out_file"] == app["error_file"] == "/srv/hello/logs/pm2-hello.raw.log"
    env = app["env"]
    assert isinstance(env, dict) and {key: env[key] for key in env if key.startswith("NEXTDEPLOY_LOG_")} == {
        "NEXTDEPLOY_LOG_OUT": "/srv/hello/logs/pm2-hello.out.log",
        "NEXTDEPLOY_LOG_ERR": "/srv/hello/logs/pm2-hello.err.log",
        "NEXTDEPLOY_LOG_MAX_BYTES": str(20 * 1024 * 1024), "NEXTDEPLOY_LOG_KEEP": "2"}
    assert pm2.ecosystem_env(config) == env  # what an in-place reload compares with the workers' env


def _worker(pm_id: int, name: str = "hello", status: str = "online", **env: str) -> dict[str, object]:
    app_env = {"PORT": "3000", "KEY": "k1", **env}
    return {"pm_id": pm_id, "name": name,
            "pm2_env": {"status": status, "env": app_env, "PATH": "/bin", "PM2_HOME": "/p"}}


IN_PLACE = {"name": "hello", "instances": 2, "source": "eco-v1", "app_env": {"PORT": "3000", "KEY": "k1"},
            "process_env": {"PATH": "/bin", "PM2_HOME": "/p"}}


def test_a_reload_that_changes_nothing_but_the_release_replaces_every_worker_in_place() -> None:
    entries = [_worker(1), _worker(0), _worker(5, name="other", PORT="4000")]
    applied = pm2.ecosystem_digest("eco-v1")
    assert pm2.in_place_reload_ids(entries, applied_digest=applied, **IN_PLACE) == (0, 1)  # type: ignore[arg-type]


def test_any_difference_sends_the_reload_through_the_ecosystem_file() -> None:
    applied = pm2.ecosystem_digest("eco-v1")
    changed: list[tuple[list[dict[str, object]], str | None]] = [
        ([_worker(0), _worker(1)], None),  # PM2 never loaded an ecosystem of ours
        ([_worker(0), _worker(1)], pm2.ecosystem_digest("eco-v2")),  # options or env changed in the config
        ([_worker(0)], applied),  # a worker missing (instances changed, or one was deleted)
        ([_worker(0), _worker(1), _worker(2)], applied),
        ([_worker(0), _worker(1, status="errored")], applied),
        ([_worker(0), {**_worker(1), "pm2_env": {**_worker(1)["pm2_env"], "unstable_restarts": 3}}], applied),  # type: ignore[dict-item]
        ([_worker(0), _worker(1, KEY="k0")], applied),  # a rotated secret (the file is the same)
        ([_worker(0), _worker(1, PORT="3001")], applied),  # a manual `pm2 reload --update-env`
        ([_worker(0), {**_worker(1), "pm_id": "_old_1"}], applied),  # a reload still in progress
    ]
    for entries, digest in changed:
        assert pm2.in_place_reload_ids(entries, applied_digest=digest, **IN_PLACE) is None, (entries, digest)  # type: ignore[arg-type]
    other_cli_env = {**IN_PLACE, "process_env": {"PATH": "/usr/bin", "PM2_HOME": "/p"}}
    assert pm2.in_place_reload_ids([_worker(0), _worker(1)], applied_digest=applied, **other_cli_env) is None  # type: ignore[arg-type]


def test_foreign_processes_are_those_of_the_name_not_run_from_the_root() -> None:
    root = Path("/srv/hello")
    ours = {"name": "hello", "pm2_env": {"pm_exec_path": "/srv/hello/current/.nextdeploy/launcher.cjs"}}
    by_hand = {"name": "hello", "pm2_env": {"pm_exec_path": "/home/me/hello/server.js"}}
    beside = {"name": "hello", "pm2_env": {"pm_exec_path": "/srv/hello-old/current/.nextdeploy/launcher.cjs"}}
    other_name = {"name": "api", "pm2_env": {"pm_exec_path": "/srv/api/server.js"}}
    no_env = {"name": "hello"}
    entries = [ours, by_hand, beside, other_name, no_env]
    assert pm2.foreign_processes(entries, "hello", root) == [by_hand, beside, no_env]
    assert pm2.foreign_processes([ours, other_name], "hello", root) == []
