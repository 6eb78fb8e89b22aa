"""Config validation: every bad key is reported at once, with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextdeploy.config import load_config, parse_config
from nextdeploy.errors import ConfigError

GOOD = {"app": {"name": "hello", "source": "app"}, "server": {"root": "root"}}


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = parse_config(GOOD, tmp_path)
    assert config.root == tmp_path / "root"
    assert config.source == str(tmp_path / "app")
    assert config.server.port == 3000 and config.server.instances == 2
    assert config.health.path == "/api/health" and config.releases.keep == 5
    assert not config.app.is_git
    assert config.app.reuse_dependencies and config.app.build_nice == 10 and config.app.build_timeout == 1800


@pytest.mark.parametrize(
    ("source", "ref", "is_git"),
    [("https://github.com/a/b.git", None, True), ("git@github.com:a/b", None, True), ("/srv/repo", "main", True),
     ("/srv/repo", None, False), ("../app", None, False)],
)
def test_git_sources(tmp_path: Path, source: str, ref: str | None, is_git: bool) -> None:
    app = {"name": "x", "source": source, **({"ref": ref} if ref else {})}
    assert parse_config({**GOOD, "app": app}, tmp_path).app.is_git is is_git


def test_every_error_reported_with_its_path(tmp_path: Path) -> None:
    data = {
        "app": {"name": "Bad Name!", "source": "app", "colour": "blue", "build_timeout": 0},
        "server": {"root": "r", "port": "eighty", "instances": 0},
        "health": {"path": "no-slash"},
        "releases": {"keep": 0},
        "bogus": {},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path)
    details = "\n".join(caught.value.details)
    for path in ("app.name", "app.colour: unknown key", "app.build_timeout", "server.port", "server.instances",
                 "health.path", "releases.keep", "bogus: unknown key"):
        assert path in details, details
    assert "8 invalid settings" in caught.value.message


def test_missing_required_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"app": {"name": "x"}}, tmp_path)
    assert caught.value.details == ["app.source: required key is missing", "server: required key is missing"]


def test_list_items_have_indexed_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**GOOD, "health": {"smoke": ["/", "nope"]}}, tmp_path)
    assert caught.value.details[0].startswith("health.smoke[1]:")


def test_app_path_must_stay_inside_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**GOOD, "app": {**GOOD["app"], "path": "../elsewhere"}}, tmp_path)
    assert caught.value.details[0].startswith("app.path:")


@pytest.mark.parametrize(("name", "says"), [("PORT", "set by nextdeploy from [server] port"),
                                             ("HOSTNAME", "set by nextdeploy from [server] hostname"),
                                             ("NODE_ENV", "always production"),
                                             ("NEXTDEPLOY_READY_PATH", "nextdeploy's own")])
def test_server_env_cannot_set_what_nextdeploy_controls(tmp_path: Path, name: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**GOOD, "server": {"root": "root", "env": {"API_URL": "x", name: "4000"}}}, tmp_path)
    assert caught.value.details[0].startswith("server.env:") and says in caught.value.details[0]
    allowed = {"API_URL": "x", "NODE_ENV": "production"}
    assert parse_config({**GOOD, "server": {"root": "root", "env": allowed}}, tmp_path).server.env == allowed


@pytest.mark.parametrize("root", ["app/.deploy", "app"])
def test_the_deploy_root_cannot_be_inside_a_directory_source(tmp_path: Path, root: str) -> None:
    # Each build copies the source into <root>/builds/<id>: with the root inside the source, into itself.
    with pytest.raises(ConfigError) as caught:
        parse_config({**GOOD, "app": {"name": "hello", "source": "app"}, "server": {"root": root}}, tmp_path)
    assert "[server] root" in caught.value.message and "is inside [app] source" in caught.value.message
    assert caught.value.hint and "out of the app's directory" in caught.value.hint
    # Beside it is fine, and so is a git source (checked out, not copied).
    parse_config({**GOOD, "server": {"root": "app-deploy"}}, tmp_path)
    parse_config({**GOOD, "app": {"name": "hello", "source": "app", "ref": "main"}, "server": {"root": root}},
                 tmp_path)


@pytest.mark.parametrize("key", ["not base64!!", "c2hvcnQ="])
def test_bad_server_actions_key(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**GOOD, "security": {"server_actions_key": key}}, tmp_path)
    assert caught.value.details[0].startswith("security.server_actions_key:")
    assert key not in caught.value.details[0]  # a secret is never echoed back


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "nextdeploy.toml"
    broken.write_text("[app\nname = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
