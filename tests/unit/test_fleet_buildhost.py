"""``[build] host`` (fleet/buildhost.py): the pure parts, which source goes where, what a dry run shows, the
deploy's result, and what is refused before any host is contacted. Over ssh on real test hosts:
tests/integration/test_fleet_buildhost.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from nextdeploy.core.config import Config, parse_config
from nextdeploy.core.errors import ConfigError, ExitCode
from nextdeploy.core.steps import StepName
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.buildhost import (
    RemoteBuild,
    build_command,
    other_hosts,
    progress_line,
    read_key,
    run_build,
    sends_source,
    source_rsync_options,
    stop_when_stdin_closes,
)
from nextdeploy.fleet.deploy import FleetDeployResult
from nextdeploy.fleet.ship import ShipResult
from nextdeploy.remote.argv import RsyncStats
from nextdeploy.remote.ssh import RemoteResult, SshTransport
from support.idleapp import config_file


def fleet_config(tmp_path: Path, **app: Any) -> Config:
    data = {"app": {"name": "hello", "source": "app", **app}, "server": {"root": "/srv/hello"},
            "hosts": [{"ssh": "web1"}, {"ssh": "web2", "root": "/srv/other"}], "build": {"host": "web1"}}
    return parse_config(data, tmp_path)


def test_a_directory_source_is_sent_a_git_url_is_fetched_by_the_build_host(tmp_path: Path) -> None:
    assert sends_source(fleet_config(tmp_path)) is True
    assert sends_source(fleet_config(tmp_path, source="https://git.example.com/hello.git")) is False
    assert sends_source(fleet_config(tmp_path, source="git@git.example.com:team/hello.git", ref="main")) is False


def test_a_git_repository_on_this_machine_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        sends_source(fleet_config(tmp_path, ref="main"))
    assert raised.value.exit_code == ExitCode.CONFIG
    assert f"builds from [app] source {tmp_path / 'app'}, a git repository on this machine" in raised.value.message
    assert raised.value.hint is not None and "git URL the build host can reach" in raised.value.hint


def test_the_source_is_sent_as_the_builder_copies_it() -> None:
    options = source_rsync_options()
    assert {"--delete", "--delete-excluded", "--exclude=node_modules", "--exclude=.next",
            "--exclude=.git"} <= set(options)


def test_the_build_host_is_not_shipped_to_and_builds_with_the_key_on_stdin() -> None:
    roots = {"web1": "/srv/hello", "web2": "/srv/other", "web3": "/srv/hello"}
    assert other_hosts(roots, "web1") == {"web2": "/srv/other", "web3": "/srv/hello"}
    assert other_hosts({"web1": "/srv/hello"}, "web1") == {}
    argv = build_command("/srv/hello/", "web1")
    assert argv[0].startswith("/srv/hello/tools/nextdeploy-") and argv[0].endswith("/bin/nextdeploy")
    assert argv[1:] == ["host", "build", "--key-from-stdin", "-c", "/srv/hello/nextdeploy.toml", "--as", "web1"]
    # A directory source's revision is read here (its copy there has no .git) and given to the build.
    assert build_command("/srv/hello", "web1", "abc123-dirty")[1:5] == ["host", "build", "--key-from-stdin",
                                                                        "--revision"]


def test_the_key_comes_on_stdin_and_none_is_refused() -> None:
    assert read_key(io.BytesIO(b"c2VjcmV0\n")) == "c2VjcmV0"
    with pytest.raises(ConfigError, match="no Server Actions key came on stdin"):
        read_key(io.BytesIO(b"\n"))


def test_the_key_is_one_line_and_the_build_stops_when_stdin_closes_after_it() -> None:
    """The controller keeps stdin open after the key while it waits: reading the key does not wait for end of
    file, and the end of file that comes when the controller goes away stops the build (not before)."""
    read_end, write_end = os.pipe()
    stopped = threading.Event()
    with os.fdopen(read_end, "rb") as stdin, os.fdopen(write_end, "wb") as controller:
        controller.write(b"c2VjcmV0\n")
        controller.flush()
        assert read_key(stdin) == "c2VjcmV0"  # the pipe is still open: a read to its end would hang here
        stop_when_stdin_closes(stdin, stopped.set)
        assert not stopped.wait(0.3)
        controller.close()
        assert stopped.wait(5)


def test_an_end_of_stdin_once_the_build_is_done_stops_nothing() -> None:
    read_end, write_end = os.pipe()
    stopped = threading.Event()
    with os.fdopen(read_end, "rb") as stdin:
        done_watching = stop_when_stdin_closes(stdin, stopped.set)
        done_watching()
        os.close(write_end)
        assert not stopped.wait(0.5)


def test_the_build_hosts_steps_are_shown_under_its_name_as_they_start_and_end() -> None:
    err = io.StringIO()
    host = Reporter(json_mode=True, err_stream=err)  # the build host's, as `host build` makes it
    with host.step("build the app (next build)", StepName.BUILD):
        host.info("release 20260101-000000-abcd (built on web1 in /srv/hello)")
    with contextlib.suppress(RuntimeError), host.step("install dependencies (pnpm)", StepName.INSTALL):
        raise RuntimeError
    shown = [progress_line("web1", line) for line in err.getvalue().splitlines()]
    assert shown[0] == "  web1: ... build the app (next build)"
    assert shown[1] is None  # not a step
    assert re.fullmatch(r"  web1: build the app \(next build\) \([0-9.]+ s\)", shown[2] or ""), shown
    assert re.fullmatch(r"  web1: FAILED install dependencies \(pnpm\) \([0-9.]+ s\)", shown[4] or ""), shown
    for other in ("error: the build failed", "ok  [not-a-step] x (1.0 s)", "... x", "ok", ""):
        assert progress_line("web1", other) is None, other


def test_a_deploys_result_names_the_build_host_and_lists_it_unshipped() -> None:
    shipped = ShipResult("web2", "/srv/other/releases/r", 1000, 10, 2, 100_000, ("/srv/other/releases/q",), 1.0)
    remote = RemoteBuild("web1", "r", Path("/b/work/releases/r"), RsyncStats(5000, 10, 1),
                         RsyncStats(300, 0, 3, 800), 9.5)
    result = FleetDeployResult("r", "q", 12.0, 9.5, {"web2": shipped}, None, hosts=["web1", "web2"],
                               built_on=remote).to_json()
    assert result["build"] == {"host": "web1", "release": "r", "revision": None, "source_bytes_sent": 5000,
                               "pulled_bytes": 800, "seconds": 9.5}
    assert [(host["host"], host["ship"] and host["ship"]["bytes_sent"]) for host in result["hosts"]] == \
        [("web1", None), ("web2", 1000)]
    assert result["ship_bytes"] == 1000
    here = FleetDeployResult("r", "q", 12.0, 9.5, {"web2": shipped}, None).to_json()
    assert here["build"] == {"host": None} and [host["host"] for host in here["hosts"]] == ["web2"]


def dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            hosts: tuple[str, ...], extra: str = "") -> tuple[int | None, dict[str, Any], str]:
    from nextdeploy.cli.main import main

    config, _ = config_file(tmp_path)
    text = config.read_text().replace(f'root = "{tmp_path / "root"}"', 'root = "/srv/hello"')
    config.write_text(text.replace("[app]\n", f"[app]\n{extra}") + '\n[build]\nhost = "web1"\n'
                      f'dir = "{tmp_path / "build"}"\n\n' + "".join(f'[[hosts]]\nssh = "{name}"\n\n' for name in hosts))
    ran: list[Any] = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: ran.append(args))
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: ran.append(args))
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "--dry-run", "--json", "-c", str(config)])
    assert ran == []
    captured = capsys.readouterr()
    return exited.value.code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


def test_a_dry_run_shows_the_build_on_the_build_host_and_ships_to_the_others_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, plan, _ = dry_run(tmp_path, monkeypatch, capsys, ("web1", "web2", "web3"))
    assert code in (0, None)
    steps = plan["steps"]
    assert steps[0].endswith("the platform against web1's")
    assert f"send the source {tmp_path / 'app'} to web1:/srv/hello/source (rsync, a delta; without " \
        "node_modules, .next, .git, .turbo, .vercel)" in steps
    [build] = [line for line in steps if line.startswith("build the release once")]
    assert build.startswith("build the release once on web1 in /srv/hello: /srv/hello/tools/nextdeploy-")
    assert "--build-box" not in build  # a member of [[hosts]]
    assert "host build --key-from-stdin -c /srv/hello/nextdeploy.toml --as web1" in build
    assert f"pull it to {tmp_path / 'build' / 'work' / 'releases'}/<new id> on this machine" in " ".join(steps)
    shipped = [line.split(":")[0] for line in steps if line.startswith("ship to ")]
    assert shipped == ["ship to web2", "ship to web3"]
    assert sum("host prepare" in line for line in steps) == 3
    assert not (tmp_path / "build").exists()


def test_a_dry_run_of_a_lone_build_host_pulls_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _, plan, _ = dry_run(tmp_path, monkeypatch, capsys, ("web1",))
    assert not any(line.startswith(("pull it", "ship to")) for line in plan["steps"])


def test_a_local_git_source_with_a_build_host_is_refused_before_any_host_is_contacted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from nextdeploy.cli.main import main

    code, _, err = dry_run(tmp_path, monkeypatch, capsys, ("web1", "web2"), extra='ref = "main"\n')
    assert code == ExitCode.CONFIG
    assert err.splitlines()[-1].startswith("error: [build] host = 'web1' builds from [app] source ")
    # The deploy too, before anything (web1 does not even resolve: an ssh attempt would be exit 19).
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "-c", str(tmp_path / "nextdeploy.toml")])
    assert exited.value.code == ExitCode.CONFIG
    assert "a git repository on this machine that the build host cannot fetch" in capsys.readouterr().err


def test_host_build_without_a_key_on_stdin_answers_a_config_error_and_builds_nothing(tmp_path: Path) -> None:
    """The real `nextdeploy host build` as the controller runs it, but with nothing on stdin: one JSON
    answer (exit 3), and no root made."""
    import sys

    config = tmp_path / "nextdeploy.toml"
    root = tmp_path / "root"
    config.write_text(f'[app]\nname = "x"\nsource = "app"\n\n[server]\nroot = "{root}"\n\n[[hosts]]\nssh = "web1"\n\n'
                      '[build]\nhost = "web1"\n')
    done = subprocess.run([sys.executable, "-m", "nextdeploy", "host", "build", "--key-from-stdin", "-c", str(config),
                           "--as", "web1"], input="", capture_output=True, text=True, timeout=60)
    assert done.returncode == ExitCode.CONFIG, done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and answer["error"]["code"] == ExitCode.CONFIG
    assert answer["error"]["message"] == "no Server Actions key came on stdin (--key-from-stdin)"
    assert done.stderr.splitlines()[-1].startswith("error: no Server Actions key came on stdin")
    assert not root.exists()


def test_a_missing_source_directory_is_a_project_error_before_any_host_is_contacted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from nextdeploy.cli.main import main

    config = tmp_path / "nextdeploy.toml"
    config.write_text('[app]\nname = "x"\nsource = "gone"\n\n[server]\nroot = "/srv/x"\n\n[[hosts]]\nssh = "web1"\n\n'
                      '[build]\nhost = "web1"\n')
    ran: list[Any] = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: ran.append(args))
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "-c", str(config)])
    assert exited.value.code == ExitCode.PROJECT and ran == []
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: source directory {tmp_path / 'gone'} does not exist (fix: fix [app] source in nextdeploy.toml)")


def test_a_build_box_is_set_up_and_sent_the_config_beside_the_hosts_and_builds_in_its_own_root(
        tmp_path: Path) -> None:
    from nextdeploy.fleet.setup import build_box, machine_roots

    data = {"app": {"name": "hello", "source": "app"}, "server": {"root": "/srv/hello"},
            "hosts": [{"ssh": "web1"}, {"ssh": "web2", "root": "/srv/other"}],
            "build": {"host": "deploy@box:2222", "root": "/srv/build"}}
    config = parse_config(data, tmp_path)
    assert build_box(config) == ("deploy@box:2222", "/srv/build")
    assert machine_roots(config) == {"web1": "/srv/hello", "web2": "/srv/other", "deploy@box:2222": "/srv/build"}
    assert config.for_host("deploy@box:2222").root == Path("/srv/build")
    assert other_hosts(machine_roots(config), "deploy@box:2222") == {"web1": "/srv/hello", "web2": "/srv/other"}
    # Without [build] root: [server] root there; a member of [[hosts]] is no build box.
    data["build"] = {"host": "box"}
    assert machine_roots(parse_config(data, tmp_path))["box"] == "/srv/hello"
    data["build"] = {"host": "web2"}
    assert build_box(parse_config(data, tmp_path)) is None
    assert list(machine_roots(parse_config(data, tmp_path))) == ["web1", "web2"]


def test_a_dry_run_with_a_build_box_sets_it_up_builds_there_and_ships_to_every_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, plan, _ = dry_run(tmp_path, monkeypatch, capsys, ("web2", "web3"))  # [build] host = "web1": a box
    assert code in (0, None)
    steps = plan["steps"]
    assert steps[0].startswith("set up and check web2, web3, web1: ") and steps[0].endswith("against web1's")
    assert "send the config to web1:/srv/hello/nextdeploy.toml (0600)" in steps
    [build] = [line for line in steps if line.startswith("build the release once on web1 in /srv/hello: ")]
    assert "host build --key-from-stdin --build-box -c /srv/hello/nextdeploy.toml --as web1" in build
    assert [line.split(":")[0] for line in steps if line.startswith("ship to ")] == ["ship to web2", "ship to web3"]
    assert any(line.startswith("pull it to ") for line in steps)
    assert not any("--as web1" in line for line in steps if "host prepare" in line or "host activate" in line)
    assert plan["hosts"] == ["web2", "web3"]


def test_a_build_box_keeps_only_its_newest_release_and_a_host_with_a_live_release_keeps_all(tmp_path: Path) -> None:
    from nextdeploy.core.context import Context
    from nextdeploy.core.ui import Reporter
    from nextdeploy.fleet.buildhost import drop_on_box
    from nextdeploy.host.executor import LocalExecutor

    root = tmp_path / "root"
    config = parse_config({"app": {"name": "x", "source": "app"}, "server": {"root": str(root)}}, tmp_path)
    ctx = Context(config, LocalExecutor(), Reporter(force_plain=True, stream=io.StringIO()))
    ids = ["20261201-000000-000-aaaa", "20261202-000000-000-bbbb", "20261203-000000-000-cccc"]
    for release in ids:
        (root / "releases" / release).mkdir(parents=True)
    (root / "current").symlink_to(root / "releases" / ids[0])  # a root with a live release: a host
    assert drop_on_box(ctx, ids[2]) == [] and sorted(p.name for p in (root / "releases").iterdir()) == ids
    (root / "current").unlink()
    assert drop_on_box(ctx, ids[2]) == [ids[1], ids[0]]
    assert [p.name for p in (root / "releases").iterdir()] == [ids[2]]
    assert [event["reason"] for event in ctx.log.events()] == ["pulled; a build box keeps only its newest build"] * 2


# The build host's `host build` as the controller meets it, run here: the key as its first line, a step line
# on stderr, then (``wait``) stdin read to its end before it answers, as the real one's watcher does.
FAKE_BUILD = r"""
import json, sys
record = open(sys.argv[1], "w")
record.write("key " + sys.stdin.buffer.readline().decode().strip() + "\n"); record.flush()
print("... [build] build the app (next build)", file=sys.stderr, flush=True)
if sys.argv[2] == "wait":
    sys.stdin.buffer.read()
    record.write("stdin closed\n"); record.flush()
    print(json.dumps({"ok": False, "error": {"code": 130, "message": "interrupted by SIGTERM"}}))
    sys.exit(130)
print("ok  [build] build the app (next build) (0.1 s)", file=sys.stderr, flush=True)
print(json.dumps({"ok": True, "result": {"release": "r1"}}))
"""


class LocalTransport:
    """``SshTransport.start`` and ``result_of`` over a local process (the fake build above)."""

    def __init__(self, record: Path, mode: str) -> None:
        self.record, self.mode = record, mode

    def start(self, host: str, argv: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", FAKE_BUILD, str(self.record), self.mode],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def result_of(self, host: str, argv: list[str], code: int, stdout: bytes, stderr: bytes) -> RemoteResult:
        return RemoteResult(host, tuple(argv), code, stdout, stderr)


def test_the_remote_build_gets_the_key_its_steps_are_shown_as_they_come_and_it_answers(tmp_path: Path) -> None:
    err = io.StringIO()
    transport = cast(SshTransport, LocalTransport(tmp_path / "record", "answer"))
    said = run_build(transport, "web1", ["nextdeploy", "host", "build"], "c2VjcmV0", Reporter(stream=err))
    assert said == {"release": "r1"}
    assert (tmp_path / "record").read_text() == "key c2VjcmV0\n"
    assert err.getvalue().splitlines() == ["  web1: ... build the app (next build)",
                                           "  web1: build the app (next build) (0.1 s)"]


def test_a_controller_interrupted_during_the_remote_build_closes_its_stdin_so_it_stops(tmp_path: Path) -> None:
    record = tmp_path / "record"
    transport = cast(SshTransport, LocalTransport(record, "wait"))
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread() is threading.main_thread()
    seen = threading.Event()

    class Interrupting(io.StringIO):
        def write(self, text: str) -> int:
            if "build the app" in text:
                seen.set()
            return super().write(text)

    timer = threading.Thread(target=lambda: seen.wait(30) and signal.pthread_kill(main, signal.SIGINT))
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C at a terminal
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_build(transport, "web1", ["nextdeploy", "host", "build"], "c2VjcmV0",
                      Reporter(stream=Interrupting()))
    finally:
        timer.join()
        signal.signal(signal.SIGINT, earlier)
    # The build saw its stdin end (it stopped, and answered) before the interrupt went on.
    assert record.read_text() == "key c2VjcmV0\nstdin closed\n"
