"""``nextdeploy setup``: the very same nextdeploy, and pm2, on every host, under the host's root.

Two phases, each on every host in parallel:

1. **Look** (changes nothing anywhere): connect, and ask the installed nextdeploy of this version and code for the
   host's facts (``<root>/tools/nextdeploy-<version>/bin/nextdeploy host facts``): a host already set up
   answers in that one command and is done. Any other host is asked with ``fleet.facts`` sent to its
   ``python3``: Python >= 3.11 with venv, node, rsync (and npm while pm2 is missing) must be there, and
   the root must be nextdeploy's (``host.rootmark.claim``). The platform of every host must match the
   builder's (``fleet.platformcheck``). A host that fails any of this fails the set-up before anything
   changed on any host.
2. **Install** on the hosts that need it: the root and its mark, the wheelhouse (``fleet.wheelhouse``)
   by rsync, a venv at ``<root>/tools/nextdeploy-<version>/`` (``.installed`` written last, holding the
   digest of the code installed: ``wheelhouse.code_digest``; another version's venv then removed), pm2
   with npm under ``<root>/tools`` as a local deploy installs it, then the installed nextdeploy's own facts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nextdeploy
from nextdeploy.core.config import Config
from nextdeploy.core.errors import ConfigError, HostPathError, NextdeployError, ToolMissingError
from nextdeploy.core.fleetconfig import HostConfig
from nextdeploy.fleet import facts as facts_module
from nextdeploy.fleet.facts import PREFIX, collect
from nextdeploy.fleet.platformcheck import check_platforms
from nextdeploy.fleet.wheelhouse import code_digest, target_of, wheelhouse
from nextdeploy.host.rootmark import MARKER_TEXT, ROOT_MARKER, Claim, claim
from nextdeploy.host.tools import PINNED_NPM_TOOLS
from nextdeploy.plans.npm import GLOBALCONFIG_ARGV, globalconfig_from, npm_install_argv
from nextdeploy.remote.argv import SshSettings
from nextdeploy.remote.errors import SshError, last_line
from nextdeploy.remote.ssh import RemoteResult, SshTransport

MIN_PYTHON = (3, 11)
NOT_INSTALLED = 111  # the fast path's exit code when this version is not installed on the host
LOOK_TIMEOUT = 60.0
INSTALL_TIMEOUT = 900.0
T = TypeVar("T")

INSTALL_HINTS = {
    "python3": "install Python >= 3.11 (Debian/Ubuntu: apt-get install python3 python3-venv)",
    "venv": "install Python's venv module (Debian/Ubuntu: apt-get install python3-venv)",
    "node": "install Node.js >= 20.9 (https://nodejs.org; Debian/Ubuntu: the NodeSource packages)",
    "rsync": "apt-get install rsync (or your system's package manager)",
    "npm": "install npm with Node.js (apt-get install npm), or pm2 yourself (npm install -g pm2@7)",
}


@dataclass
class HostSetup:
    """One host's set-up: its root and facts, and whether this run installed anything there."""

    name: str
    root: str
    facts: dict[str, Any]
    installed: bool = False
    seconds: float = 0.0

    def line(self) -> str:
        """One line saying what the host is and what set-up did there."""
        f = self.facts
        node = f.get("node") or {}
        libc = f.get("libc") or {}
        free = f.get("disk_free")
        done = f"installed in {self.seconds:.1f} s" if self.installed else "already set up"
        disk = f"{free / 1e9:.1f} GB free" if isinstance(free, int) else "free disk unknown"
        return (f"{self.name}: nextdeploy {f.get('nextdeploy')} {done} · {f.get('os')} {f.get('arch')} "
                f"{libc.get('family')} {libc.get('version')} · Python {f['python']['version']} · "
                f"Node {node.get('version')} · pm2 {'yes' if f.get('pm2') else 'no'} · {disk} under {self.root}")


def host_root(config: Config, host: HostConfig) -> str:
    """The host's deploy root: its own, else ``[server] root`` (absolute: the config checks it)."""
    return host.root or config.server.root


def build_box(config: Config) -> tuple[str, str] | None:
    """A ``[build] host`` that is not one of the ``[[hosts]]`` (a build box) and its root (``[build] root``, else
    ``[server] root``); None without one."""
    host = config.build.host
    if host is None or host in [entry.ssh for entry in config.hosts]:
        return None
    return host, config.build.root or config.server.root


def machine_roots(config: Config) -> dict[str, str]:
    """Every machine a fleet deploy sets up and sends its config to: the hosts, then a build box; each root."""
    roots = {host.ssh: host_root(config, host) for host in config.hosts}
    box = build_box(config)
    if box is not None:
        roots[box[0]] = box[1]
    return roots


def tools_prefix(root: str, version: str) -> str:
    return f"{root}/tools/{PREFIX}{version}"


def ssh_settings(config: Config) -> SshSettings:
    """``[ssh]`` as the transport takes it (``config`` with ~ expanded, relative to the config file)."""
    file = Path(os.path.expanduser(config.ssh.config)) if config.ssh.config else None
    return SshSettings(config_file=config.base_dir / file if file else None, options=tuple(config.ssh.options))


def build_dir(config: Config) -> Path:
    """The controller's own dir for builds and caches: ``[build] dir``, default ~/.cache/nextdeploy/<app>."""
    raw = config.build.dir or f"~/.cache/nextdeploy/{config.app.name}"
    return config.base_dir / Path(os.path.expanduser(raw))


def in_parallel(names: Sequence[str], work: Callable[[str], T]) -> dict[str, T]:
    """``work`` on every host at once; raises the first host's error (in config order), the others' errors
    as its detail lines, once every host is done."""
    results: dict[str, T] = {}
    errors: dict[str, NextdeployError] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = {name: pool.submit(work, name) for name in names}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except NextdeployError as error:
                errors[name] = error
    if errors:
        first, *others = errors.values()
        first.details = [*first.details, *(f"also: {error.message}" for error in others)]
        raise first
    return results


def installed_argv(root: str, *args: str) -> list[str]:
    """``nextdeploy ARGS`` on a host, run by its nextdeploy of this version and this code (``.installed`` holds
    the ``code_digest`` it was installed from); exit NOT_INSTALLED, running nothing, when that is not there."""
    script = ('prefix=$1 digest=$2; shift 2; [ "$(cat "$prefix/.installed" 2>/dev/null)" = "$digest" ] && '
              f'test -x "$prefix/bin/nextdeploy" && exec "$prefix/bin/nextdeploy" "$@"; exit {NOT_INSTALLED}')
    return ["sh", "-c", script, "sh", tools_prefix(root, nextdeploy.__version__), code_digest(), *args]


def is_set_up(facts: dict[str, Any]) -> bool:
    """Whether the facts a host's installed nextdeploy answered say it is set up: this version, and pm2."""
    return facts.get("nextdeploy") == nextdeploy.__version__ and bool(facts.get("pm2"))


def look(transport: SshTransport, name: str, root: str) -> tuple[dict[str, Any], bool]:
    """The host's facts, and whether this nextdeploy is installed there (read only): this version, and this
    code. The fast path is one command: the installed nextdeploy of this version and code answers."""
    answer = transport.run(name, installed_argv(root, "host", "facts", "--root", root), timeout=LOOK_TIMEOUT)
    if answer.ok:
        said = _json(name, answer)
        if is_set_up(said):
            return said, True
    probe = transport.run(name, ["sh", "-c", 'exec python3 -I - "$1"', "sh", root],
                          stdin=Path(facts_module.__file__).read_bytes(), timeout=LOOK_TIMEOUT)
    if probe.exit_code == 127:
        raise ToolMissingError(f"{name} has no python3", hint=f"on {name}: {INSTALL_HINTS['python3']}")
    return _json(name, probe), False


def _json(name: str, result: RemoteResult) -> dict[str, Any]:
    try:
        said = json.loads(result.text)
    except ValueError:
        said = None
    if not result.ok or not isinstance(said, dict):
        raise SshError(name, f"asking {name} for its facts failed (exit {result.exit_code}): "
                             f"{last_line(result.error_text or result.text)}",
                       hint=f"run `ssh {name} python3 --version` and fix what it says")
    return said


def check_ready(name: str, facts: dict[str, Any]) -> None:
    """What a host needs before nextdeploy installs there: a ``ToolMissingError`` naming every missing one."""
    python = facts.get("python") or {}
    version = tuple(int(part) for part in str(python.get("version", "0")).split(".")[:2] if part.isdigit())
    missing = []
    if version < MIN_PYTHON:
        missing.append(("python3", f"Python >= 3.11 (it has {python.get('version')})"))
    elif not python.get("venv"):
        missing.append(("venv", "Python's venv module"))
    for tool in ("node", "rsync"):
        if not facts.get(tool):
            missing.append((tool, tool))
    if not facts.get("pm2") and not facts.get("npm"):
        missing.append(("npm", "npm (to install pm2)"))
    if missing:
        raise ToolMissingError(f"{name} lacks {', '.join(what for _, what in missing)}",
                               hint=f"on {name}: " + "; ".join(INSTALL_HINTS[tool] for tool, _ in missing))


def check_root(name: str, facts: dict[str, Any]) -> None:
    """The root on the host must be nextdeploy's, as a local root must (``host.rootmark``)."""
    root = facts["root"]
    if root.get("error"):
        raise HostPathError(f"cannot read the deploy root {root['path']} on {name}: {root['error']}",
                            hint=f"make it readable and writable for the ssh user of {name}, or choose another root")
    if claim(root["entries"], root["marked"], root["release_log"], root["deletable"]) is Claim.FOREIGN:
        shown = ", ".join(root["entries"][:3])
        raise HostPathError(
            f"the root {root['path']} on {name} is a non-empty directory nextdeploy did not create (it holds "
            f"{shown}); nextdeploy deletes files in its root, so it does not use it",
            hint=f"point the root of {name} at a new or empty directory (nextdeploy creates it)",
        )


def install(transport: SshTransport, name: str, root: str, facts: dict[str, Any], house: Path) -> dict[str, Any]:
    """Install this nextdeploy (and pm2 when missing) under ``root`` on the host; its facts after."""
    version = nextdeploy.__version__
    prefix = tools_prefix(root, version)
    wheels = f"{root}/tools/wheels"
    made = transport.run(name, ["sh", "-c", 'mkdir -p "$1/tools" && { test -e "$1/$2" || printf %s "$3" > "$1/$2"; }',
                                "sh", root, ROOT_MARKER, MARKER_TEXT], timeout=LOOK_TIMEOUT)
    _ok(name, made, f"creating {root} on {name}", f"make {root}'s parent writable for the ssh user of {name}")
    transport.rsync(name, house, wheels, delete=True, timeout=INSTALL_TIMEOUT)
    # PIP_CONFIG_FILE=/dev/null: the host's pip settings (an index, constraints) have no say; the wheelhouse
    # is the whole world. The mark, written last, says which code this is; the old versions' venvs go once
    # this one is complete.
    script = ('set -e; rm -rf "$1"; "$4" -m venv "$1"; '
              'PIP_CONFIG_FILE=/dev/null "$1/bin/python" -m pip install --quiet --no-index --disable-pip-version-check '
              '--find-links "$2" "nextdeploy==$3"; printf %s "$5" > "$1/.installed"; '
              'for old in "${1%/*}"/nextdeploy-*; do [ "$old" = "$1" ] || rm -rf "$old"; done')
    done = transport.run(name, ["sh", "-c", script, "sh", prefix, wheels, version, facts["python"]["path"],
                                code_digest()], timeout=INSTALL_TIMEOUT)
    _ok(name, done, f"installing nextdeploy {version} into {prefix} on {name}",
        f"fix what pip says on {name}, then run `nextdeploy setup` again")
    if not facts.get("pm2"):
        # The host's global npmrc (its registry, proxy or CA settings), which --prefix alone would hide.
        said_config = transport.run(name, ["npm", *GLOBALCONFIG_ARGV], timeout=LOOK_TIMEOUT)
        globalconfig = globalconfig_from(said_config.text) if said_config.ok else None
        npm = transport.run(name, [*npm_install_argv("npm", f"{root}/tools", PINNED_NPM_TOOLS["pm2"], globalconfig),
                                   "--loglevel=error"], timeout=INSTALL_TIMEOUT)
        _ok(name, npm, f"installing pm2 into {root}/tools on {name}",
            f"install it yourself on {name}: npm install -g {PINNED_NPM_TOOLS['pm2']}")
    answer = transport.run(name, [f"{prefix}/bin/nextdeploy", "host", "facts", "--root", root], timeout=LOOK_TIMEOUT)
    said = _json(name, answer)
    if said.get("nextdeploy") != version:
        raise ToolMissingError(f"nextdeploy on {name} answers version {said.get('nextdeploy')}, not {version}",
                               hint=f"remove {prefix} on {name} and run `nextdeploy setup` again")
    return said


def _ok(name: str, result: RemoteResult, what: str, hint: str) -> None:
    if not result.ok:
        # npm's last words point at its log file; the line before says what went wrong.
        said = "\n".join(line for line in (result.error_text or result.text).splitlines()
                         if "complete log of this run" not in line)
        raise ToolMissingError(f"{what} failed (exit {result.exit_code}): {last_line(said)}", hint=hint)


def setup_fleet(config: Config, transport: SshTransport, say: Callable[[str], None] = print,
                known: Mapping[str, dict[str, Any]] | None = None) -> list[HostSetup]:
    """Set up every host of ``config``; one line per host through ``say``. Raises before any host changed
    when one cannot be set up (unreachable, missing tools, a foreign root, another platform). ``known``: the
    facts of hosts already known to be set up (a deploy's fleet lock answered them), not asked again."""
    if not config.hosts:
        raise ConfigError("the config lists no [[hosts]]: there is nothing to set up",
                            hint='add [[hosts]] entries (ssh = "web1"), or deploy on this machine with '
                                 "`nextdeploy deploy`")
    roots = machine_roots(config)  # a build box is set up as a host is (pm2 too, unused there)
    names = list(roots)
    known = known or {}
    asked = in_parallel([name for name in names if name not in known], lambda name: look(transport, name, roots[name]))
    looked = {name: (known[name], True) if name in known else asked[name] for name in names}
    for name, (facts, ready) in looked.items():
        if not ready:
            check_ready(name, facts)
            check_root(name, facts)
    host_facts = {name: facts for name, (facts, _) in looked.items()}
    builder = config.build.host or "this machine"
    check_platforms(builder, host_facts[builder] if config.build.host else collect(build_dir(config)), host_facts)
    pending = [name for name in names if not looked[name][1]]
    houses = {target_of(host_facts[name]).key: target_of(host_facts[name]) for name in pending}
    cache = build_dir(config) / "wheels"
    made = {key: wheelhouse(cache, target) for key, target in houses.items()}

    def set_up(name: str) -> HostSetup:
        started = time.monotonic()
        said = install(transport, name, roots[name], host_facts[name], made[target_of(host_facts[name]).key])
        return HostSetup(name, roots[name], said, installed=True, seconds=time.monotonic() - started)

    installed = in_parallel(pending, set_up)
    results = [installed.get(name) or HostSetup(name, roots[name], host_facts[name]) for name in names]
    for result in results:
        say(result.line())
    return results
