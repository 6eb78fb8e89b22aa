"""``deploy --dry-run``: the host operations of a deploy, computed by the same planners, printed."""

from __future__ import annotations

import os
from pathlib import Path

from nextdeploy.activation.activate import current_release
from nextdeploy.core.context import Context
from nextdeploy.core.ids import new_release_id
from nextdeploy.core.paths import ReleaseLayout, SourceLayout
from nextdeploy.host import rootmark
from nextdeploy.host.tools import PINNED_NPM_TOOLS, find_tool, tools_bin
from nextdeploy.plans import build as build_plan
from nextdeploy.plans import hooks as hooks_plan
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.plans import release as release_plan
from nextdeploy.plans.ops import MakeDirs, Op, Run, Symlink, WriteFile
from nextdeploy.plans.packagemanager import choose_manager
from nextdeploy.plans.runtime import runtime_env
from nextdeploy.procedures.hooks import hook_ops
from nextdeploy.release.builder import LAUNCHER_SOURCE, Installer, plan_package_manager
from nextdeploy.release.project import find_lockfile, read_yarnrc
from nextdeploy.release.secrets import SERVER_ACTIONS_ENV, secret_files


def deploy_plan(ctx: Context, release_id: str) -> list[tuple[str, list[Op]]]:
    """The steps of a deploy and their ops. Build outputs are predicted (app path as configured)."""
    config, paths = ctx.config, ctx.paths
    source = SourceLayout(paths.build_dir(release_id) / "src", config.app.path)
    app_rel = "" if config.app.path in ("", ".") else config.app.path.strip("/")
    layout = ReleaseLayout(paths.release_dir(release_id), app_rel)
    # Without a lockfile here the deploy stops before its install (exit 4); the plan still shows one.
    source_known = not config.app.is_git and find_lockfile(
        (Path(config.source) / config.app.path).resolve(), Path(config.source).resolve(),
        config.app.package_manager) is not None
    if source_known:
        installer = plan_package_manager(ctx, Path(config.source))
    else:
        # Read from the checkout (or the source, once there) during the deploy; shown as for a pnpm app.
        installer = Installer(choose_manager("pnpm", "pnpm-lock.yaml", "9.0"), "pnpm", None)
    install_dir = source.source_root / installer.install_rel
    yarnrc = read_yarnrc(Path(config.source) / installer.install_rel) if installer.choice.berry else {}
    env = build_plan.build_env(config.app.build_env, release_id)
    secret_env = {SERVER_ACTIONS_ENV: "(from shared/server-actions.key)"}
    hidden = frozenset(secret_env)
    if config.app.is_git:
        export: list[Op] = [
            build_plan.git_mirror_op("git", config.source, paths.git_mirror_dir, paths.git_mirror_dir.exists(),
                                     config.app.build_timeout),
            *build_plan.git_checkout_ops("git", paths.git_mirror_dir, f"<{config.app.ref or 'HEAD'}>",
                                         source.source_root),
        ]
    else:
        export = build_plan.export_directory_ops(Path(config.source), source.source_root)
    preflight_env = runtime_env(config, 0, "127.0.0.1")
    preflight_env["PORT"] = "<free port>"
    ecosystem = pm2_plan.ecosystem_source(config, paths, secret_files(paths))
    pm2, pm2_install = _tool_path(ctx, "pm2", config.pm2.bin)
    pm2_home = config.pm2_home or os.environ.get("PM2_HOME")
    pm2_env = {"PM2_HOME": str(pm2_home)} if pm2_home else {}
    live = current_release(ctx)
    first = live is None
    choice, tool = installer.choice, installer.binary
    setup = [(f"install {choice.label} with npm ({choice.reason}; nothing on this host fits)", installer.setup)]

    def hook_step(event: hooks_plan.HookEvent) -> list[tuple[str, list[Op]]]:
        ops = hook_ops(ctx, event, release_id, live, "<revision>", layout.app_dir)
        return [(f"hook {event}", list(ops))] if ops else []

    return [
        ("prepare the deploy root", [*(MakeDirs(p) for p in (paths.releases_dir, paths.shared_dir)),
                                     MakeDirs(paths.logs_dir, mode=0o700)]),
        *(setup if installer.setup else []),
        *([("install pm2 (not found on PATH)", pm2_install)] if pm2_install else []),
        ("export source", export),
        ("install and build" + (" (no install if the install inputs match the last good build's: the cached"
                                " node_modules are moved in, [app] reuse_dependencies)"
                                if config.app.reuse_dependencies else "")
         + ("; the package manager and its version are read from the source at deploy time (shown: pnpm)"
            if not source_known else ""), [
            build_plan.install_op(choice, tool, config.app, install_dir,
                                  build_plan.install_env(env, choice, yarnrc, paths.yarn_cache_dir),
                                  paths.build_log(release_id), installer.path),
            build_plan.build_op(tool, config.app, source.app_dir, {**env, **secret_env}, paths.build_log(release_id),
                                hidden, installer.path),
        ]),
        ("assemble the release", [
            *release_plan.begin_release_ops(layout),
            *release_plan.standalone_release_ops(source, layout, LAUNCHER_SOURCE, has_public=True,
                                                 link_from=paths.release_dir(live) if live else None),
            *release_plan.shared_link_ops(paths.shared_dir, config.release.shared_files,
                                          set(config.release.shared_files), layout),
            *release_plan.finish_release_ops(layout, {"id": release_id}),
        ]),
        *hook_step("before_activate"),
        ("preflight on a private port", [
            Run(("node", str(layout.launcher_file)), cwd=layout.app_dir, env=preflight_env,
                secret_env=frozenset(config.server.env)),
        ]),
        ("activate", [
            WriteFile(paths.ecosystem_file, ecosystem, mode=0o600),
            *pm2_plan.log_ops(config, paths),
            Symlink(f"releases/{release_id}", paths.current_link),
            Run(pm2_plan.start_argv(pm2, paths.ecosystem_file, config.app.name) if first
                else pm2_plan.reload_argv(pm2, paths.ecosystem_file, config.app.name), env=pm2_env),
            Run(pm2_plan.save_argv(pm2), env=pm2_env),
        ]),
        *hook_step("after_activate"),
    ]


def _tool_path(ctx: Context, name: str, explicit: str | None = None) -> tuple[str, list[Op]]:
    """The binary a deploy would run, and the install it needs first: as found now, else where nextdeploy
    installs it with npm (pm2, pnpm), else the bare name (the deploy then stops: exit 5)."""
    found = find_tool(name, ctx.paths.tools_dir, explicit)
    if found or explicit or name not in ("pm2", "pnpm"):
        return found or explicit or name, []
    install = Run(("npm", "install", "--prefix", str(ctx.paths.tools_dir), "--no-audit", "--no-fund",
                   PINNED_NPM_TOOLS[name]))
    return str(tools_bin(ctx.paths.tools_dir) / name), [install]


def print_deploy_plan(ctx: Context) -> None:
    rootmark.check_root(ctx.paths.root)  # a root that is not ours: refused as the deploy would (read only)
    release_id = new_release_id()
    ctx.reporter.info(f"dry run: nothing will be changed; the new release would be {release_id}")
    plan = deploy_plan(ctx, release_id)
    server = ctx.config.server
    ctx.reporter.info(f"# first: {server.hostname}:{server.port} must be free, or held by this app's PM2 daemon "
                      "(else: exit 15 naming the process that holds it)")
    for title, ops in plan:
        ctx.reporter.info(f"# {title}")
        ctx.executor.apply_all(ops)
    ctx.reporter.info("# before the preflight: check every traced file is in the release ([release] include/"
                      "exclude applied), Node against next's engines, sharp if next/image optimises images "
                      f"([release] sharp_check = {ctx.config.release.sharp_check!r}), strip the Server Actions "
                      "key from the build output, link the /_next/static files of recent releases (skew protection)")
    health = ctx.config.health
    smoke = f", then the smoke routes {', '.join(health.smoke)}" if health.smoke else ""
    ctx.reporter.info(f"# preflight passes when {health.path} answers {health.expect_status} within "
                      f"{health.timeout:g} s and stays healthy for {health.stable_for:g} s{smoke}")
    if current_release(ctx) is not None:
        ctx.reporter.info("# if PM2 last loaded this same ecosystem file and its workers have its env (a code-only "
                          "deploy), no preflight and no reload: the held cut-over starts one more worker like each "
                          "old one from the new release (duplicateProcessId on the PM2 daemon's socket; the first "
                          "alone, the others once it answers), held off "
                          "the public port; the same gate runs on their private ports; then the release is approved "
                          "(<release>/.nextdeploy/approved: they open the port) and the old workers are deleted "
                          "(deleteProcessId, they drain)")
    ctx.reporter.info("# `pm2 save`: with the daemon's socket at hand, nextdeploy writes the same dump.pm2 (0600) "
                      "itself, from the daemon's process list")
    ctx.reporter.info("# then: verify workers (online, new pids, cwd in the new release, no restarts), "
                      f"probe http://{ctx.config.server.hostname}:{ctx.config.server.port}"
                      f"{ctx.config.health.path}, roll back on failure, keep {ctx.config.releases.keep} releases")
    if ctx.config.hooks.on_failure is not None:
        ctx.reporter.info(f"# if the deploy fails (not when interrupted): the on_failure hook, "
                          f"{ctx.config.hooks.on_failure!r}, with NEXTDEPLOY_ERROR set")
    ctx.reporter.result({"release": release_id, "steps": [
        {"step": title, "ops": [op.render() for op in ops]} for title, ops in plan
    ]})
