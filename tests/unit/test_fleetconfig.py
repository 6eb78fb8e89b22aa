"""The fleet's keys of nextdeploy.toml: [[hosts]], [ssh], [rollout], [build] (core/fleetconfig.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nextdeploy.core.config import parse_config
from nextdeploy.core.errors import ConfigError, ExitCode

GOOD: dict[str, Any] = {"app": {"name": "hello", "source": "app"}, "server": {"root": "/srv/hello"}}


def test_no_hosts_is_the_single_machine_of_today(tmp_path: Path) -> None:
    config = parse_config(GOOD, tmp_path)
    assert config.hosts == [] and config.ssh.config is None and config.ssh.options == []
    assert config.rollout.canary == 1 and config.rollout.batch == 1 and config.build.host is None


def test_a_fleet_as_the_issue_writes_it(tmp_path: Path) -> None:
    config = parse_config({
        **GOOD,
        "hosts": [{"ssh": "web1"}, {"ssh": "deploy@web2.example.com", "hostname": "10.0.0.12", "root": "/srv/b"},
                  {"ssh": "root@[::1]:2222"}],
        "ssh": {"config": "~/.ssh/config", "options": ["-o", "ProxyJump=bastion"]},
        "rollout": {"canary": 1, "batch": "50%"},
        "build": {"dir": "~/.cache/nextdeploy/hello", "host": "web1"},
    }, tmp_path)
    assert [host.ssh for host in config.hosts] == ["web1", "deploy@web2.example.com", "root@[::1]:2222"]
    assert config.hosts[1].root == "/srv/b" and config.hosts[1].hostname == "10.0.0.12"
    assert config.ssh.options == ["-o", "ProxyJump=bastion"] and config.build.host == "web1"


@pytest.mark.parametrize(("batch", "hosts", "size"), [(1, 5, 1), (3, 5, 3), ("50%", 5, 3), ("50%", 4, 2),
                                                       ("1%", 3, 1), ("100%", 7, 7)])
def test_batch_sizes(tmp_path: Path, batch: int | str, hosts: int, size: int) -> None:
    assert parse_config({**GOOD, "rollout": {"batch": batch}}, tmp_path).rollout.batch_size(hosts) == size


@pytest.mark.parametrize(("extra", "says"), [
    ({"hosts": [{"ssh": "a b"}]}, "hosts[0].ssh: is not an ssh destination"),
    ({"hosts": [{"ssh": "web1:70000"}]}, "hosts[0].ssh: has port 70000, not one of 1-65535"),
    ({"hosts": [{"ssh": ""}]}, "hosts[0].ssh: is not an ssh destination"),
    ({"hosts": [{"ssh": 1}]}, "hosts[0].ssh: must be a string"),
    ({"hosts": [{"root": "/srv/x"}]}, "hosts[0].ssh: required key is missing"),
    ({"hosts": [{"ssh": "web1", "port": 22}]}, "hosts[0].port: unknown key"),
    ({"hosts": [{"ssh": "web1", "root": "srv/x"}]}, "hosts[0].root: must be an absolute path on the host"),
    ({"hosts": [{"ssh": "web1", "root": "/" + "/".join(["r" * 200] * 6)}]}, "hosts[0].root: is too long"),
    ({"hosts": [{"ssh": "web1", "root": "/" + "r" * 256}]}, "hosts[0].root: a component of the path is longer"),
    ({"hosts": [{"ssh": "web1", "hostname": "a b"}]}, "hosts[0].hostname: is neither an IP address nor a host"),
    ({"hosts": [{"ssh": "web1"}, {"ssh": "web1"}]}, "hosts: 'web1' (hosts[1].ssh) is listed twice"),
    ({"hosts": {"ssh": "web1"}}, "hosts: must be a list"),
    ({"server": {"root": "relative"}, "hosts": [{"ssh": "web1"}]}, "[server] root 'relative' is relative"),
    ({"ssh": {"config": " "}}, "ssh.config: is empty"),
    ({"ssh": {"options": "-o X=y"}}, "ssh.options: must be a list"),
    ({"ssh": {"options": ["-o", "a\0"]}}, "ssh.options: item [1] contains a NUL character"),
    ({"ssh": {"options": [""]}}, "ssh.options: item [0] is blank"),
    ({"ssh": {"user": "x"}}, "ssh.user: unknown key"),
    ({"rollout": {"canary": -1}}, "rollout.canary"),
    ({"rollout": {"canary": True}}, "rollout.canary: must be a whole number"),
    ({"rollout": {"batch": 0}}, "rollout.batch: must be a number of hosts (1-1000)"),
    ({"rollout": {"batch": "50"}}, 'rollout.batch: must be a number of hosts, without quotes, or a percentage'),
    ({"rollout": {"batch": "0%"}}, "rollout.batch: must be a number of hosts, without quotes, or a percentage"),
    ({"rollout": {"batch": "101%"}}, "rollout.batch: must be a number of hosts, without quotes, or a percentage"),
    ({"rollout": {"batch": 1.5}}, "rollout.batch"),
    ({"build": {"host": "web 9"}, "hosts": [{"ssh": "web1"}]}, "build.host: is not an ssh destination"),
    ({"build": {"root": "/srv/b"}, "hosts": [{"ssh": "web1"}]}, "build: root '/srv/b' is set for no [build] host"),
    ({"build": {"host": "web1", "root": "/srv/b"}, "hosts": [{"ssh": "web1"}]},
     "build: root '/srv/b' is set for 'web1', one of the [[hosts]], which builds in its own root"),
    ({"build": {"host": "box", "root": "srv/b"}, "hosts": [{"ssh": "web1"}]}, "build.root: must be an absolute path"),
    ({"build": {"host": "box"}, "hosts": [{"ssh": "web1"}], "server": {"root": "rel"}},
     "build: host 'box' (a build box: not one of the [[hosts]]) has no root and [server] root 'rel' is relative"),
    ({"build": {"dir": ""}}, "build.dir: is empty"),
])
def test_bad_fleet_keys_are_one_line_each_with_their_path(tmp_path: Path, extra: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({**GOOD, **extra, "server": {**GOOD["server"], **extra.get("server", {})}}, tmp_path)
    assert raised.value.exit_code == ExitCode.CONFIG
    assert any(says in line for line in raised.value.details), raised.value.details
    assert all("\n" not in line for line in raised.value.details)
