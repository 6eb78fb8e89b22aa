"""``[build] host``: building a fleet's release on one of its hosts, or on a build box, instead of the
controller, then shipping it from there through the controller.

For a fleet whose controller cannot build for the hosts (a laptop of another platform) or whose hosts
cannot all build (1 GB servers but one): the build host is one of the ``[[hosts]]`` (same ``ssh``), or a
build box (any other ssh destination: ``fleet.setup.build_box``, its root ``[build] root``), set up like a
host, and builds in its root, where a local deploy would, with today's builder:

1. the source goes to ``<its root>/source`` (a dir nextdeploy owns there): a directory source by rsync over
   the session's connection, as a delta, without what the builder never copies (``node_modules``,
   ``.next``, ``.git``, ...); a git URL is fetched by the build host itself, into its own git mirror;
2. ``nextdeploy host build --key-from-stdin`` there builds ``<root>/releases/<id>`` with the fleet's Server
   Actions key (sent on stdin, never on a command line) and answers its id in JSON; its mtimes are made
   content-derived there (``fleet.ship.normalise_mtimes``), as every shipped copy's are;
3. hosts cannot be assumed to reach each other, so the controller relays: it pulls the release into
   ``<build dir>/work/releases/<id>`` (rsync, hard links to its previous copy: a delta) and ships it to the
   other hosts as it ships its own builds. A member build host has it already: nothing is shipped to it; a
   fleet of the build host alone pulls nothing. A build box serves nothing: every host gets it.

The build host's release log has the release's ``building`` and ``built`` events, and its build log
(``<root>/logs/build-<id>.log``); the other hosts log it ``built`` when it is prepared there, as for a
controller build; the deploy's result names the build host.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nextdeploy.core.config import Config
from nextdeploy.core.context import Context
from nextdeploy.core.errors import ConfigError, ProjectError
from nextdeploy.core.ids import is_release_id, new_release_id
from nextdeploy.core.manifest import layout_of
from nextdeploy.core.steps import untag
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.build import clear_leftovers, drop_older
from nextdeploy.fleet.hostcall import StartedCall, host_argv
from nextdeploy.fleet.ship import LINK_DESTS, next_dir, normalise_mtimes
from nextdeploy.host.lock import DeployLock
from nextdeploy.plans.build import IGNORED_IN_SOURCE
from nextdeploy.plans.ops import Remove, Rename
from nextdeploy.release import builder
from nextdeploy.release.secrets import SERVER_ACTIONS_ENV
from nextdeploy.remote.argv import RsyncStats
from nextdeploy.remote.ssh import SshTransport

SOURCE_DIR = "source"  # under the build host's root: the source the controller sent
PULL_PREFIX = ".pull-"  # <build dir>/work/releases/.pull-<id>: a pull not finished yet
SOURCE_TIMEOUT = 900.0
BUILD_TIMEOUT = 4 * 3600.0  # the build host's builder stops a hung step at [app] build_timeout itself
PULL_TIMEOUT = 1800.0
STOP_SECONDS = 30.0  # an interrupted controller waits this long for the build host's build to stop


# --- deciding (pure) --------------------------------------------------------------------------------------


def sends_source(config: Config) -> bool:
    """Whether the controller sends the source to the build host: a directory source, yes; a git URL is
    fetched by the build host. A git repository given as a path on this machine cannot be either: refused."""
    if not config.app.is_git:
        return True
    if config.source.startswith("/"):
        raise ConfigError(f"[build] host = {config.build.host!r} builds from [app] source {config.source}, a git "
                          "repository on this machine that the build host cannot fetch",
                          hint="give [app] source as a git URL the build host can reach, or a directory (without "
                               "[app] ref: the controller sends its files)")
    return False


def check_source(config: Config) -> None:
    """Before any host is contacted: the build host can get the source (``sends_source``), and a directory
    source is there to send (``ProjectError``, as the builder says it, not an rsync failure)."""
    if sends_source(config) and not Path(config.source).is_dir():
        raise ProjectError(f"source directory {config.source} does not exist",
                           hint="fix [app] source in nextdeploy.toml")


def source_dir(root: str) -> str:
    return f"{root.rstrip('/')}/{SOURCE_DIR}"


def source_rsync_options() -> list[str]:
    """The source sent as the builder copies a local one: without dependencies, build output, VCS data;
    what was deleted here (or is now excluded) deleted there."""
    return ["--delete", "--delete-excluded", *(f"--exclude={name}" for name in IGNORED_IN_SOURCE)]


def build_command(root: str, host: str, revision: str | None = None, box: bool = False) -> list[str]:
    """The command line of the build on the build host (the key comes on its stdin); ``revision``: the
    directory source's, read here (its copy there has no .git); ``box``: a build box, which keeps only its
    newest release."""
    return host_argv(root, host, ["build", "--key-from-stdin", *(["--revision", revision] if revision else []),
                                  *(["--build-box"] if box else [])])


def is_box(config: Config) -> bool:
    """Whether the ``[build] host`` is a build box (not one of the ``[[hosts]]``)."""
    return config.build.host is not None and config.build.host not in [entry.ssh for entry in config.hosts]


def other_hosts(roots: dict[str, str], build_host: str) -> dict[str, str]:
    """The hosts the release is shipped to: all but the build host, which built it in place."""
    return {host: root for host, root in roots.items() if host != build_host}


def dry_run_lines(config: Config, roots: dict[str, str], pulled_to: Path, new_id: str) -> list[str]:
    """What building on the ``[build] host`` would run (``deploy --dry-run``)."""
    from nextdeploy.remote.argv import remote_command

    host = config.build.host
    assert host is not None
    root = roots[host]
    lines = []
    if sends_source(config):
        lines.append(f"send the source {config.source} to {host}:{source_dir(root)} (rsync, a delta; without "
                     f"{', '.join(IGNORED_IN_SOURCE)})")
    else:
        lines.append(f"{host} fetches the git source {config.source} itself")
    box = is_box(config)
    lines.append(f"build the release once on {host} in {root}: {remote_command(build_command(root, host, box=box))} "
                 "(the Server Actions key on its stdin)")
    if other_hosts(roots, host):
        lines.append(f"pull it to {pulled_to}/{new_id} on this machine (rsync, a delta against the previous one), "
                     "to ship it on")
    return lines


# --- on the build host --------------------------------------------------------------------------------------


@dataclass
class HostBuildResult:
    release: str
    built_on: str
    revision: str | None
    files: int
    bytes: int
    seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)  # the build's steps there, with their times

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "built_on": self.built_on, "revision": self.revision,
                "files": self.files, "bytes": self.bytes, "seconds": round(self.seconds, 3), "steps": self.steps}


def read_key(stream: IO[bytes] | None = None) -> str:
    """The Server Actions key the controller sends as the first line on stdin (``--key-from-stdin``); the
    controller keeps stdin open while it waits for the answer (``stop_when_stdin_closes``)."""
    key = (stream or sys.stdin.buffer).readline().decode(errors="replace").strip()
    if not key:
        raise ConfigError("no Server Actions key came on stdin (--key-from-stdin)",
                          hint="this command is run by a fleet deploy, which sends the key; run `nextdeploy deploy`")
    return key


def stop_when_stdin_closes(stream: IO[bytes] | None = None,
                           stop: Callable[[], None] | None = None) -> Callable[[], None]:
    """Watch stdin (after the key) for end of file in a thread: the controller went away (killed, its ssh
    session dropped), so the build stops: ``stop()``, by default SIGTERM to the main thread, which ends the
    build as Ctrl-C does (its process group killed, its build dir removed: ``host.procs``, the builder)
    instead of holding the build lock for minutes for nobody. Returns the function that stops watching
    (the answer is due: an end of file then changes nothing)."""
    source = stream or sys.stdin.buffer
    main = threading.main_thread().ident
    watching = threading.Event()
    watching.set()

    def interrupt_main() -> None:
        assert main is not None
        signal.pthread_kill(main, signal.SIGTERM)  # in the main thread: a blocking wait there is interrupted

    def watch() -> None:
        try:
            while source.read(4096):
                pass
        except (OSError, ValueError):  # stdin unreadable or closed here: as good as gone
            pass
        if watching.is_set():
            (stop or interrupt_main)()

    threading.Thread(target=watch, daemon=True, name="controller-gone").start()
    return watching.clear


def build_here(ctx: Context, key: str, built_on: str, revision: str | None = None,
               box: bool = False) -> HostBuildResult:
    """Build a release in this host's root, from ``<root>/source`` (a directory source, whose ``revision`` the
    controller read) or the git source, with the fleet's Server Actions ``key``; one build at a time (the
    root's build lock), after clearing what an interrupted one left."""
    started = time.monotonic()
    config = ctx.config
    if not config.app.is_git:
        app = config.app.model_copy(update={"source": str(ctx.paths.root / SOURCE_DIR)})
        ctx = Context(config.model_copy(update={"app": app}), ctx.executor, ctx.reporter)
    builder.prepare_root(ctx)
    with DeployLock(ctx.paths.build_lock_file, "nextdeploy host build (fleet build host)", 0.0):
        clear_leftovers(ctx)
        release_id = new_release_id()
        ctx.reporter.info(f"release {release_id} (built on {built_on} in {ctx.paths.root})")
        built = builder.build_release(ctx, release_id, {SERVER_ACTIONS_ENV: key}, revision)
        if box:
            drop_on_box(ctx, release_id)
    if built.cleanup is not None:
        built.cleanup.join()
    release_dir = ctx.paths.release_dir(release_id)
    normalise_mtimes(release_dir, keep=next_dir(built.layout.app_rel))
    return HostBuildResult(release_id, built_on, built.manifest.get("revision"), int(built.manifest["files"]),
                           int(built.manifest["bytes"]), time.monotonic() - started, ctx.reporter.steps_json())


def drop_on_box(ctx: Context, keep: str) -> list[str]:
    """A build box serves nothing and activates nothing, so no retention ever runs there: it keeps only the
    release just built (``keep``; the controller pulls it). Never in a root with a live release (``current``):
    that is a host, whose releases its own retention keeps."""
    if os.path.lexists(ctx.paths.current_link):
        return []
    dropped, sweeping = drop_older(ctx, keep, reason="pulled; a build box keeps only its newest build")
    if sweeping is not None:
        sweeping.join()  # this command ends once it answers: its trash is emptied first
    return dropped


# --- on the controller ------------------------------------------------------------------------------------


@dataclass
class RemoteBuild:
    """A release built on the build host, and the controller's copy of it (None when nothing is shipped)."""

    host: str
    release: str
    release_dir: Path | None
    source_sent: RsyncStats | None
    pulled: RsyncStats | None
    seconds: float
    revision: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "release": self.release, "revision": self.revision,
                "source_bytes_sent": self.source_sent.bytes_sent if self.source_sent else None,
                "pulled_bytes": self.pulled.bytes_received if self.pulled else None,
                "seconds": round(self.seconds, 3)}


def build_on_host(transport: SshTransport, config: Config, roots: dict[str, str], key: str,
                  controller: Context, reporter: Reporter) -> RemoteBuild:
    """Send the source, build on ``[build] host``, and pull the release here when other hosts need it.
    A failing build raises the host's error (``HostFailedError``: the host, ``build``, the builder's exit
    code and message); nothing live changed anywhere."""
    host = config.build.host
    assert host is not None
    started = time.monotonic()
    root = roots[host]
    sent = revision = None
    if sends_source(config):
        revision = builder.working_tree_revision(controller, Path(config.source))
        sent = transport.rsync(host, Path(config.source), source_dir(root), checksum=False,
                               timeout=SOURCE_TIMEOUT, options=source_rsync_options())
        reporter.info(f"  source sent to {host}:{source_dir(root)}: {sent.bytes_sent / 1e3:.0f} kB")
    said = run_build(transport, host, build_command(root, host, revision, is_box(config)), key, reporter)
    release = str(said["release"])
    pulled = release_dir = None
    if other_hosts(roots, host):
        release_dir, pulled = pull_release(transport, host, f"{root.rstrip('/')}/releases/{release}", controller)
        reporter.info(f"  pulled {release} from {host}: {pulled.bytes_received / 1e6:.1f} MB received")
    return RemoteBuild(host, release, release_dir, sent, pulled, time.monotonic() - started, said.get("revision"))


def run_build(transport: SshTransport, host: str, argv: list[str], key: str, reporter: Reporter) -> dict[str, Any]:
    """``host build`` on the build host: the key as its first line on stdin, which then stays open while the
    build runs (its end of file stops the build there: a controller that goes away, killed or interrupted,
    leaves no build running for nobody, holding that root's build lock); the host's step lines shown as they
    come (``progress_line``). Its JSON answer's ``result``, or its error raised."""
    build = StartedCall(transport, host, argv, step="build", what="host build", timeout=BUILD_TIMEOUT,
                        on_line=lambda line: _show(reporter, progress_line(host, line)))
    try:
        build.send(key + "\n")
        return build.answer()
    finally:
        if build.process.poll() is None:  # interrupted here: the build stops there once its stdin closes
            build.close_stdin()
            try:
                build.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                build.process.kill()


def _show(reporter: Reporter, line: str | None) -> None:
    if line is not None:
        reporter.info(line)


def progress_line(host: str, line: str) -> str | None:
    """How the controller shows a line of the build host's stderr (None: not shown, it is in the build log
    there or in the error): its steps, as this machine's, under the host's name: ``  web1: ... <title>`` when
    one starts, ``  web1: <title> (12.3 s)`` when it ends (``  web1: FAILED <title> (...)``)."""
    mark, _, rest = line.partition(" ")
    shown = {"...": "... ", "ok": "", "FAILED": "FAILED "}.get(mark)
    name, title = untag(rest.lstrip())
    return f"  {host}: {shown}{title}" if shown is not None and name is not None else None


def pull_release(transport: SshTransport, host: str, remote_dir: str, controller: Context) -> tuple[Path, RsyncStats]:
    """Copy a release from ``host`` into the controller's releases dir: into ``.pull-<id>`` first (an
    interrupted pull is resumed, never taken for complete), hard links to the controller's previous
    copies, renamed to ``<id>`` once complete."""
    paths = controller.paths
    builder.prepare_root(controller)
    release_id = remote_dir.rstrip("/").rsplit("/", 1)[-1]
    final = paths.release_dir(release_id)
    temp = paths.releases_dir / f"{PULL_PREFIX}{release_id}"
    for stale in paths.releases_dir.glob(f"{PULL_PREFIX}*"):
        if stale != temp:
            controller.executor.apply(Remove(stale))
    previous = sorted((entry for entry in paths.releases_dir.iterdir()
                       if is_release_id(entry.name) and entry.name != release_id and layout_of(entry) is not None),
                      reverse=True)[:LINK_DESTS]
    if final.is_dir():  # pulled before (a deploy run again): compared and completed in place
        temp = final
    pulled = transport.pull(host, remote_dir, temp, timeout=PULL_TIMEOUT,
                            options=[f"--link-dest={entry}" for entry in previous])
    if temp != final:
        controller.executor.apply(Rename(temp, final))
    return final, pulled

