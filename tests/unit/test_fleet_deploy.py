"""fleet.deploy and fleet.build: the pure parts (which release the fleet served before, the JSON result, the
controller's own config). tests/integration/test_fleet_deploy.py runs the deploy against real hosts."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nextdeploy.core.config import parse_config
from nextdeploy.core.paths import UNFINISHED_MARKER
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.build import clear_leftovers, controller_config, controller_context, drop_older
from nextdeploy.fleet.converge import converge_if_mixed
from nextdeploy.fleet.deploy import FleetDeployResult, fleet_previous, read_fleet_state
from nextdeploy.fleet.plan import HostOutcome, Outcome, after_rollout
from nextdeploy.fleet.rollout import HostRun, RolloutResult
from nextdeploy.fleet.ship import ShipResult
from nextdeploy.host import files
from nextdeploy.remote.ssh import RemoteResult


def fleet_config(tmp_path: Path) -> dict[str, object]:
    return {"app": {"name": "hello", "source": str(tmp_path)}, "server": {"root": "/srv/hello"},
            "hosts": [{"ssh": "web1", "hostname": "10.0.0.11"}, {"ssh": "web2", "root": "/srv/other"}],
            "build": {"dir": str(tmp_path / "cache")}}


def test_the_controller_builds_under_its_build_dir_never_under_the_server_root(tmp_path: Path) -> None:
    config = parse_config(fleet_config(tmp_path), tmp_path)
    local = controller_config(config)
    assert local.root == tmp_path / "cache" / "work"
    assert local.hosts == [] and local.build.dir is None
    assert local.app == config.app and config.root == Path("/srv/hello")  # the fleet's config unchanged


def test_the_previous_release_is_the_one_the_hosts_serve() -> None:
    assert fleet_previous({"web1": {"current": "A"}, "web2": {"current": "A"}}) == "A"
    assert fleet_previous({"web1": {"current": None}, "web2": {"current": None}}) is None
    assert fleet_previous({"web1": {"current": "A"}, "web2": {"current": "B"}, "web3": {"current": "B"}}) == "B"


def test_the_json_result_lists_every_host_with_its_outcome_and_ship_figures() -> None:
    shipped = {host: ShipResult(host, "/srv/hello/releases/B", 1000, 10, 3, 100_000, (), 1.0)
               for host in ("web1", "web2")}
    outcomes = [HostOutcome("web1", Outcome.SWITCHED),
                HostOutcome("web2", Outcome.FAILED, "activate", "verify failed")]
    runs = {outcome.host: HostRun(outcome, 2.0) for outcome in outcomes}
    rollout = RolloutResult("B", "A", (("web1",), ("web2",)), runs, after_rollout(outcomes, "B", "A"), 5.0)
    data = FleetDeployResult("B", "A", 9.0, 4.0, shipped, rollout, failed="web2 failed at activate").to_json()
    assert data["ship_bytes"] == 2000 and data["waves"] == [["web1"], ["web2"]]
    assert [(host["host"], host["outcome"], host["ship"]["bytes_sent"]) for host in data["hosts"]] == [
        ("web1", "switched", 1000), ("web2", "failed", 1000)]
    assert data["failed"] == "web2 failed at activate" and data["previous"] == "A"


def test_an_interrupted_controller_build_leaves_nothing_behind_for_long(tmp_path: Path) -> None:
    config = parse_config(fleet_config(tmp_path), tmp_path)
    ctx = controller_context(config, Reporter(stream=io.StringIO(), force_plain=True))
    paths = ctx.paths
    (paths.builds_dir / "20260101-000000-000-aaaa" / "src").mkdir(parents=True)
    (paths.releases_dir / "20260101-000000-000-aaaa").mkdir(parents=True)
    (paths.releases_dir / "20260101-000000-000-aaaa" / UNFINISHED_MARKER).write_text("")
    (paths.releases_dir / "20251231-000000-000-bbbb" / ".nextdeploy").mkdir(parents=True)  # a finished one
    assert clear_leftovers(ctx) == ["20260101-000000-000-aaaa", "20260101-000000-000-aaaa"]
    assert list(paths.builds_dir.iterdir()) == []
    assert [path.name for path in paths.releases_dir.iterdir()] == ["20251231-000000-000-bbbb"]


def test_the_controllers_previous_release_moves_to_its_trash_and_is_deleted_in_the_background(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(fleet_config(tmp_path), tmp_path)
    ctx = controller_context(config, Reporter(stream=io.StringIO(), force_plain=True))
    paths = ctx.paths
    old, new = "20251231-000000-000-bbbb", "20260101-000000-000-aaaa"
    for release in (old, new):
        (paths.release_dir(release) / ".next").mkdir(parents=True)
        (paths.release_dir(release) / ".next" / "chunk.js").write_text("x")
    (paths.trash_dir / "left-by-a-killed-run").mkdir(parents=True)
    deleting, may_delete = threading.Event(), threading.Event()
    real_rmtree = shutil.rmtree

    def slow_rmtree(path: Any, **kwargs: Any) -> None:
        deleting.set()
        may_delete.wait(timeout=10)  # the deletion takes long: drop_older must not wait for it
        real_rmtree(path, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", slow_rmtree)
    monkeypatch.setattr(files.shutil, "rmtree", slow_rmtree)
    done: list[Any] = []
    caller = threading.Thread(target=lambda: done.append(drop_older(ctx, new)), daemon=True)
    caller.start()
    caller.join(timeout=5)
    assert done, "drop_older waited for the deletion"
    dropped, sweeping = done[0]
    assert dropped == [old] and deleting.is_set() and sweeping is not None
    assert [path.name for path in paths.releases_dir.iterdir()] == [new]  # gone from releases/ at once
    assert (paths.trash_dir / old / ".next" / "chunk.js").is_file()  # whole, in the trash, until deleted
    may_delete.set()
    sweeping.join(timeout=10)
    assert not paths.trash_dir.exists()  # with what a killed run left there
    assert [(record.id, record.status) for record in ctx.log.records()][-1] == (old, "removed")


def test_every_hosts_releases_and_key_file_are_read_side_by_side(tmp_path: Path) -> None:
    """One round of reads before the build: ``host releases`` and the key file's digest at once (each waits
    until the other has started), no ``host status``; the mixed-fleet check then reads nothing again."""
    releases_started, keys_started = threading.Event(), threading.Event()
    asked: list[tuple[str, str]] = []

    class Transport:
        def run(self, host: str, argv: Any, *, stdin: bytes | None = None, timeout: float | None = None) -> Any:
            keys_started.set()
            assert releases_started.wait(timeout=10), "the key files were read only after the releases"
            asked.append((host, "key"))
            return RemoteResult(host, tuple(argv), 0, b"absent\n", b"")

    def call_each(subcommand: list[str], hosts: Any = None, **_: Any) -> dict[str, Any]:
        releases_started.set()
        assert keys_started.wait(timeout=10), "the releases were read only after the key files"
        asked.extend((host, subcommand[0]) for host in ("web1", "web2"))
        return {host: {"current": "R1", "usable": ["R1"]} for host in ("web1", "web2")}

    session: Any = SimpleNamespace(names=["web1", "web2"], roots={"web1": "/srv/a", "web2": "/srv/b"},
                                   transport=Transport(), call_each=call_each)
    statuses, keys = read_fleet_state(session)
    assert [(status.host, status.live, status.ready) for status in statuses] == [("web1", "R1", ("R1",)),
                                                                                ("web2", "R1", ("R1",))]
    assert [(key.host, key.digest) for key in keys] == [("web1", None), ("web2", None)]
    assert sorted(asked) == [("web1", "key"), ("web1", "releases"), ("web2", "key"), ("web2", "releases")]
    assert converge_if_mixed(session, statuses) == statuses and len(asked) == 4  # converged: no other read
