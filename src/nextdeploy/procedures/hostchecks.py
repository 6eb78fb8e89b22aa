"""What every procedure checks on the host before it changes anything live: PM2 (opened once), the app's
PM2 name and public port (held by no other program), and the Node that PM2's daemon runs workers on."""

from __future__ import annotations

import errno
import os
from typing import Any

from nextdeploy.core.context import Context
from nextdeploy.core.errors import NameTakenError
from nextdeploy.host.ports import bind_error, bound_address, port_holders, port_problem
from nextdeploy.host.tools import node_version, require_tool
from nextdeploy.nextjs import envcheck
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.pm2.client import Pm2


def open_pm2(ctx: Context) -> Pm2:
    binary = require_tool("pm2", ctx.paths.tools_dir, ctx.config.pm2.bin, install=True)
    pm2 = Pm2(binary, ctx.config.pm2_home, ctx.executor)
    pm2.ensure_home()
    return pm2


def check_host(ctx: Context, pm2: Pm2) -> None:
    """What other programs hold that the app needs: its PM2 name, its port. In milliseconds, not after the
    build and the switch; before the recovery, which may start the live release again."""
    processes = running_processes(pm2)
    check_app_name(ctx, pm2, processes)
    check_public_port(ctx, pm2, processes)


def running_processes(pm2: Pm2) -> list[dict[str, Any]]:
    """PM2's process list, without starting a daemon: no daemon (no ``rpc.sock``), nothing runs."""
    return pm2.processes() if (pm2.home_dir / "rpc.sock").exists() else []


def check_runtime_node(pm2: Pm2) -> None:
    """Raise ToolMissingError if PM2's daemon would run the workers on another Node than the build's and the
    preflight's: started before Node was upgraded (or nvm switched), it keeps forking its own."""
    daemon_node = pm2.daemon_node()
    if daemon_node is None:
        return  # no daemon: the pm2 command starts one with the node on PATH
    node = require_tool("node")
    if os.path.realpath(daemon_node) == os.path.realpath(node):
        return  # the usual case, decided without running either
    daemon_version = node_version(daemon_node) if os.path.isfile(daemon_node) else None
    problem = envcheck.runtime_node_problem(pm2.home_dir, daemon_node, daemon_version, node, node_version(node))
    if problem is not None:
        raise problem


def check_app_name(ctx: Context, pm2: Pm2, processes: list[dict[str, Any]]) -> None:
    """Raise NameTakenError if PM2 runs something else under the app's name: the activation would reload it,
    and a failed first deploy would delete it."""
    name = ctx.config.app.name
    foreign = pm2_plan.foreign_processes(processes, name, ctx.config.root)
    if foreign:
        env = foreign[0].get("pm2_env") or {}
        raise NameTakenError(
            f"PM2 (PM2_HOME={pm2.home_dir}) already runs an app named {name!r} that is not from "
            f"{ctx.config.root}: {env.get('pm_exec_path') or '?'} (pid {foreign[0].get('pid') or '-'})",
            hint=f"`pm2 delete {name}` if it is an old copy of this app, or set [app] name to another name",
        )


def check_public_port(ctx: Context, pm2: Pm2, processes: list[dict[str, Any]]) -> None:
    """Raise PortError unless the app can listen on its port: free, or held by the live app itself."""
    server = ctx.config.server
    error = bind_error(server.hostname, server.port)
    if error is None:
        return
    ours = {int(entry["pid"]) for entry in processes if entry.get("name") == ctx.config.app.name and entry.get("pid")}
    daemon = pm2.daemon_pid()
    if daemon is not None:
        ours.add(daemon)  # in cluster mode the daemon, the cluster primary, holds the listening socket
    holders = (port_holders(server.port, likely=ours, address=bound_address(server.hostname, server.port))
               if error.errno == errno.EADDRINUSE else [])
    problem = port_problem(server.hostname, server.port, error, holders, ours)
    if problem is not None:
        raise problem
