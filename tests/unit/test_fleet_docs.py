"""docs/fleet.md's load balancer config is the one the fleet tests run (tests/support/hosts.py::nginx_front)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from nextdeploy.core.config import parse_config
from support.hosts import nginx_conf, nginx_front

ROOT = Path(__file__).resolve().parents[2]


def documented_nginx() -> str:
    found = re.findall(r"```nginx\n(.*?)```", (ROOT / "docs/fleet.md").read_text(encoding="utf-8"), re.S)
    assert len(found) == 1, "docs/fleet.md must show exactly one ```nginx block"
    return str(found[0])


def directives(config: str) -> list[str]:
    """The config without comments and layout: one entry per line that says something."""
    lines = (re.sub(r"(^|(?<=[;{}]))\s*#.*$", "", line).strip() for line in config.splitlines())
    return [re.sub(r"\s+", " ", line) for line in lines if line]


def test_the_documented_nginx_config_is_the_one_the_tests_run() -> None:
    block = documented_nginx()
    upstreams = re.findall(r"^\s*server ([^\s;{]+)", block, re.M)
    listen = re.findall(r"^\s*listen (\S+);", block, re.M)
    assert len(upstreams) == 3 and len(listen) == 1
    assert directives(block) == directives(nginx_front(listen[0], upstreams))
    for essential in ("server 10.0.0.11:3000 max_fails=0;", "keepalive 32;", "proxy_next_upstream off;",
                      "proxy_buffering off;", '200 "public, max-age=31536000, immutable";',
                      "add_header Cache-Control $static_cache_control always;"):
        assert essential in directives(block)


def test_the_comparison_sees_a_changed_directive() -> None:
    block = documented_nginx()
    upstreams = re.findall(r"^\s*server ([^\s;{]+)", block, re.M)
    for changed in (block.replace("proxy_next_upstream off;", "proxy_next_upstream error timeout;", 1),
                    block.replace("  keepalive 32;", "", 1), block.replace(" max_fails=0;", ";", 1),
                    block.replace("$static_cache_control always;", "$static_cache_control;", 1)):
        assert directives(changed) != directives(nginx_front("80", upstreams))


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                    reason="nginx is not installed (scripts/test installs it)")
def test_nginx_accepts_the_documented_config(tmp_path: Path) -> None:
    (tmp_path / "temp").mkdir()
    config = tmp_path / "nginx.conf"
    config.write_text(nginx_conf(tmp_path, "", [], front=documented_nginx()))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    checked = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(config)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    # and it would refuse a broken one: the check can fail
    config.write_text(nginx_conf(tmp_path, "", [], front=documented_nginx().replace("keepalive 32;", "keepalive;")))
    assert subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(config)],
                          capture_output=True, text=True, timeout=30).returncode != 0


def test_the_documented_fleet_config_is_valid_and_states_the_defaults(tmp_path: Path) -> None:
    found = re.findall(r"```toml\n(.*?)```", (ROOT / "docs/fleet.md").read_text(encoding="utf-8"), re.S)
    assert len(found) == 1
    documented = tomllib.loads(found[0])
    required = {"app": {"name": "hello", "source": str(tmp_path)}, "server": {"root": "/srv/hello"}}
    config = parse_config({**required, **documented}, tmp_path)
    assert [(host.ssh, host.hostname) for host in config.hosts] == [("web1", "10.0.0.11"),
                                                                    ("deploy@web2.example.com", "10.0.0.12")]
    defaults = parse_config({**required, "hosts": documented["hosts"]}, tmp_path)
    assert (config.rollout, config.ssh, config.build) == (defaults.rollout, defaults.ssh, defaults.build)
    # and the keys shown commented out are real ones
    section, shown = "", 0
    for line in found[0].splitlines():
        if header := re.match(r"^\[\[?(\w+)\]", line):
            section = header.group(1)
        elif key := re.match(r"^# (\w+) = ", line):
            model = config.hosts[0] if section == "hosts" else getattr(config, section)
            assert key.group(1) in type(model).model_fields, (section, key.group(1))
            shown += 1
    assert shown == 5  # hosts.root, ssh.config, ssh.options, build.dir, build.host
