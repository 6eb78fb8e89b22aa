"""``deploy --dry-run``: the host operations of a deploy, computed by the same planners, printed."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

from nextdeploy.activation.activate import current_release, ecosystem_ops, release_only_change_in, switch_op
from nextdeploy.core.context import Context
from nextdeploy.core.ids import new_release_id
from nextdeploy.core.paths import ReleaseLayout, SourceLayout
from nextdeploy.core.releaselog import ReleaseRecord, Status
from nextdeploy.core.steps import StepName
from nextdeploy.host import rootmark
from nextdeploy.host.tools import PINNED_NPM_TOOLS, find_tool, npm_globalconfig, tools_bin
from nextdeploy.plans import build as build_plan
from nextdeploy.plans import hooks as hooks_plan
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.plans import release as release_plan
from nextdeploy.plans.npm import npm_install_argv
from nextdeploy.plans.ops import DeleteWorkers, MakeDirs, Op, Run, SpawnWorkers, WriteFile
from nextdeploy.plans.packagemanager import choose_manager
from nextdeploy.plans.runtime import runtime_env
from nextdeploy.pm2 import rpc as pm2rpc
from nextdeploy.pm2.client import Pm2
from nextdeploy.procedures.hooks import hook_ops
from nextdeploy.procedures.retention import retire_ops, retire_title, to_retire
from nextdeploy.release.assemble import LAUNCHER_SOURCE
from nextdeploy.release.builder import build_op, install_op
from nextdeploy.release.installer import Installer, plan_package_manager
from nextdeploy.release.project import find_lockfile, read_yarnrc
from nextdeploy.release.secrets import SERVER_ACTIONS_ENV


class PlannedStep(NamedTuple):
    """One step of the dry run: its title, its ops, and the names of the steps the deploy reports for it
    (``--json`` progress and result), in order: a step the deploy adds shows up missing here."""

    title: str
    ops: list[Op]
    names: tuple[StepName, ...]


def deploy_plan(ctx: Context, release_id: str) -> list[PlannedStep]:
    """The steps of a deploy and their ops, from the planners the deploy runs. Build outputs are predicted
    (app path as configured); the held cut-over is predicted from the daemon's process list, read from its
    socket (no daemon: none to hold)."""
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
    secret_env = {SERVER_ACTIONS_ENV: "(from shared/server-actions.key)"}
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
    pm2, pm2_install = _tool_path(ctx, "pm2", config.pm2.bin)
    pm2_home = config.pm2_home or os.environ.get("PM2_HOME")
    pm2_env = {"PM2_HOME": str(pm2_home)} if pm2_home else {}
    live = current_release(ctx)
    first = live is None
    choice = installer.choice
    setup = [PlannedStep(f"install {choice.label} with npm ({choice.reason}; nothing on this host fits)",
                         installer.setup, (StepName.INSTALL_TOOL,))]

    def hook_step(event: hooks_plan.HookEvent) -> list[PlannedStep]:
        ops = hook_ops(ctx, event, release_id, live, "<revision>", layout.app_dir)
        return [PlannedStep(f"hook {event}", list(ops), (StepName.HOOK,))] if ops else []

    held_ids = None if first else _held_cutover_ids(ctx, pm2)
    if held_ids is not None:
        socket = Pm2(pm2, config.pm2_home, ctx.executor).home_dir / "rpc.sock"
        put_live = [PlannedStep(
            "held cut-over (PM2 last loaded this same ecosystem file and its workers have its env: a code-only "
            "deploy, no preflight and no reload)", [
                switch_op(ctx, release_id),
                SpawnWorkers(socket, held_ids),
                WriteFile(layout.approved_file, "approved\n"),
                DeleteWorkers(socket, held_ids, wait=False),
                *ecosystem_ops(ctx),
            ], (StepName.HELD, StepName.CUTOVER, StepName.VERIFY))]
    else:
        put_live = [
            PlannedStep("preflight on a private port", [
                Run(("node", str(layout.launcher_file)), cwd=layout.app_dir, env=preflight_env,
                    secret_env=frozenset(config.server.env)),
            ], (StepName.PREFLIGHT,)),
            PlannedStep("activate", [
                *ecosystem_ops(ctx),
                switch_op(ctx, release_id),
                Run(pm2_plan.start_argv(pm2, paths.ecosystem_file, config.app.name) if first
                    else pm2_plan.reload_argv(pm2, paths.ecosystem_file, config.app.name), env=pm2_env),
                Run(pm2_plan.save_argv(pm2), env=pm2_env),
            ], (StepName.SWITCH, StepName.START if first else StepName.RELOAD, StepName.VERIFY)),
        ]

    # Retention once the new release is live (and logged so): what it would move to trash/ now.
    records = [*ctx.log.records(), ReleaseRecord(release_id, Status.ACTIVE, live_seq=sys.maxsize)]
    doomed = to_retire(ctx, records, release_id, frozenset({release_id}))
    retire = [PlannedStep(retire_title(doomed), [op for doomed_id in doomed for op in retire_ops(ctx, doomed_id)],
                          (StepName.RETAIN,))] if doomed else []

    return [
        PlannedStep("prepare the deploy root", [*(MakeDirs(p) for p in (paths.releases_dir, paths.shared_dir)),
                                                MakeDirs(paths.logs_dir, mode=0o700)], ()),
        *(setup if installer.setup else []),
        *([PlannedStep("install pm2 (not found on PATH)", pm2_install, ())] if pm2_install else []),
        PlannedStep("export source", export, (StepName.EXPORT,)),
        PlannedStep("install and build" + (" (no install if the install inputs match the last good build's: the "
                                           "cached node_modules are moved in, [app] reuse_dependencies)"
                                           if config.app.reuse_dependencies else "")
                    + ("; the package manager and its version are read from the source at deploy time (shown: pnpm)"
                       if not source_known else ""), [
            install_op(ctx, release_id, installer, install_dir, yarnrc),
            build_op(ctx, release_id, installer, source, secret_env),
        ], (StepName.INSTALL, StepName.BUILD)),
        PlannedStep("assemble the release", [
            *release_plan.begin_release_ops(layout),
            *release_plan.standalone_release_ops(source, layout, LAUNCHER_SOURCE, has_public=True,
                                                 link_from=paths.release_dir(live) if live else None),
            *release_plan.shared_link_ops(paths.shared_dir, config.release.shared_files,
                                          set(config.release.shared_files), layout),
            *release_plan.finish_release_ops(layout, {"id": release_id}),
        ], (StepName.ASSEMBLE, StepName.BRIDGE_ASSETS)),
        *hook_step("before_activate"),
        *put_live,
        *retire,
        *hook_step("after_activate"),
    ]


def _held_cutover_ids(ctx: Context, pm2_binary: str) -> tuple[int, ...] | None:
    """The old workers a code-only deploy would hold its new ones beside (``held.held_cutover_ids``: a new
    release always holds until approved), from the process list on the daemon's socket; None without one."""
    pm2 = Pm2(pm2_binary, ctx.config.pm2_home, ctx.executor)
    try:
        processes = pm2rpc.process_list(pm2.home_dir)
    except pm2rpc.RpcUnavailable:
        return None
    return release_only_change_in(ctx, lambda: processes, pm2.env)


def _tool_path(ctx: Context, name: str, explicit: str | None = None) -> tuple[str, list[Op]]:
    """The binary a deploy would run, and the install it needs first: as found now, else where nextdeploy
    installs it with npm (pm2, pnpm), else the bare name (the deploy then stops: exit 5)."""
    found = find_tool(name, ctx.paths.tools_dir, explicit)
    if found or explicit or name not in ("pm2", "pnpm"):
        return found or explicit or name, []
    npm = find_tool("npm")
    install = Run(npm_install_argv(npm or "npm", str(ctx.paths.tools_dir), PINNED_NPM_TOOLS[name],
                                   npm_globalconfig(npm) if npm else None))
    return str(tools_bin(ctx.paths.tools_dir) / name), [install]


def print_deploy_plan(ctx: Context) -> None:
    rootmark.check_root(ctx.paths.root)  # a root that is not ours: refused as the deploy would (read only)
    release_id = new_release_id()
    ctx.reporter.info(f"dry run: nothing will be changed; the new release would be {release_id}")
    plan = deploy_plan(ctx, release_id)
    server = ctx.config.server
    ctx.reporter.info(f"# first: {server.hostname}:{server.port} must be free, or held by this app's PM2 daemon "
                      "(else: exit 15 naming the process that holds it)")
    for step in plan:
        ctx.reporter.info(f"# {step.title}")
        ctx.executor.apply_all(step.ops)
    ctx.reporter.info("# before the preflight: check every traced file is in the release ([release] include/"
                      "exclude applied), Node against next's engines, sharp if next/image optimises images "
                      f"([release] sharp_check = {ctx.config.release.sharp_check!r}), strip the Server Actions "
                      "key from the build output, link the /_next/static files of recent releases (skew protection)")
    health = ctx.config.health
    smoke = f", then the smoke routes {', '.join(health.smoke)}" if health.smoke else ""
    ctx.reporter.info(f"# preflight passes when {health.path} answers {health.expect_status} within "
                      f"{health.timeout:g} s and stays healthy for {health.stable_for:g} s{smoke}")
    if current_release(ctx) is not None and not any(StepName.HELD in step.names for step in plan):
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
        {"step": step.title, "names": [name.value for name in step.names], "ops": [op.render() for op in step.ops]}
        for step in plan
    ]})
