"""Config validation: every bad key is reported at once, with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextdeploy.core.config import load_config, parse_config
from nextdeploy.core.errors import ConfigError

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


def errors_of(tmp_path: Path, **sections: object) -> list[str]:
    """The detail lines of the ConfigError for GOOD with ``sections`` merged in."""
    data: dict[str, dict[str, object]] = {name: dict(values) for name, values in GOOD.items()}
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values  # e.g. a section written as an array of tables
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path)
    assert caught.value.hint == "fix the keys listed above"
    return caught.value.details


@pytest.mark.parametrize(("section", "key", "value", "says"), [
    ("server", "port", True, "must be a whole number"),  # was port 1
    ("server", "port", "3000", "must be a whole number"),
    ("server", "instances", 2.0, "must be a whole number"),
    ("app", "reuse_dependencies", 1, "must be true or false"),
    ("app", "build_timeout", True, "must be a number"),
    ("health", "timeout", float("nan"), "finite"),
    ("health", "stable_for", float("inf"), "finite"),
    ("app", "build_env", {"TOKEN": 5}, "must be a string"),
    ("health", "smoke", "/", "must be a list"),
])
def test_types_are_strict(tmp_path: Path, section: str, key: str, value: object, says: str) -> None:
    details = errors_of(tmp_path, **{section: {key: value}})
    assert len(details) == 1 and details[0].startswith(f"{section}.{key}") and says in details[0], details


@pytest.mark.parametrize("section", ["app.build_env", "server.env"])
@pytest.mark.parametrize(("name", "says"), [("A=B", "contains '='"), ("", "empty variable name"),
                                            ("A\0B", "NUL"), ("OK", "NUL")])
def test_env_names_and_values_must_be_possible(tmp_path: Path, section: str, name: str, says: str) -> None:
    table, key = section.split(".")
    value = "x\0y" if name == "OK" else "x"
    details = errors_of(tmp_path, **{table: {key: {name: value, "GOOD_NAME": "fine"}}})
    assert len(details) == 1 and details[0].startswith(section) and says in details[0], details


def test_validation_errors_never_echo_env_values(tmp_path: Path) -> None:
    # Before: `server.env: PORT is set by nextdeploy ... (got {'DB_PASSWORD': 'hunter2', 'PORT': '1'})`.
    cases = [({"server": {"env": {"DB_PASSWORD": "hunter2", "PORT": "1"}}}, "server.env: PORT is set by nextdeploy"),
             ({"server": {"env": {"DB_PASSWORD": "hunter2", "NUL": "pw\0x"}}}, "server.env: the value of NUL"),
             ({"server": {"env": "DB_PASSWORD=hunter2"}}, "server.env: must be a table"),
             ({"app": {"build_env": {"TOKEN": "hunter2", "BAD": 7}}}, "app.build_env.BAD: must be a string"),
             ({"app": {"build_env": {"TOKEN": "hunter2", "DB_PASSWORD=hunter2": "x"}}},
              "app.build_env: the name 'DB_PASSWORD'=... contains '='")]
    # A section written as an array of tables is refused whole: its env table must not be echoed either.
    cases += [({"server": [{"root": "r", "env": {"DB_PASSWORD": "hunter2"}}]}, "server: must be a table"),
              ({"app": {"name": "x", "source": "https://ci:hunter2@example.com/a.git", "ref": 7}}, "app.ref: must be"),
              ({"app": {"name": "x", "source": "s", "build_command": "curl -H 'token: hunter2'\0"}},
               "app.build_command: the value contains a NUL")]
    for sections, says in cases:
        details = errors_of(tmp_path, **sections)
        assert details[0].startswith(says) and "hunter2" not in "\n".join(details), details


@pytest.mark.parametrize("path", ["/é", "/a b", "/a\r\nX-Injected: 1", "/tab\there", "/\x7f", "api/health", ""])
def test_health_paths_are_ascii_url_paths(tmp_path: Path, path: str) -> None:
    details = errors_of(tmp_path, health={"path": path})
    assert details[0].startswith("health.path: must be a URL path") and "percent-encode" in details[0]
    assert errors_of(tmp_path, health={"smoke": ["/", path]})[0].startswith("health.smoke[1]: must be a URL path")
    accepted = parse_config({**GOOD, "health": {"path": "/api/health?from=probe", "smoke": ["/caf%C3%A9"]}},
                            tmp_path)
    assert accepted.health.path == "/api/health?from=probe"


@pytest.mark.parametrize("hostname", ["a..b", "x" * 64 + ".example.com", "", ".", "-a.com", "a-.com", "a b",
                                      "münchen.de", "a_b.com", "a" * 254, "127.0.0.1:3000"])
def test_bad_hostnames(tmp_path: Path, hostname: str) -> None:
    details = errors_of(tmp_path, server={"root": "root", "hostname": hostname})
    assert details[0].startswith("server.hostname: is neither an IP address nor a host name"), details


@pytest.mark.parametrize("hostname", ["127.0.0.1", "0.0.0.0", "::1", "::", "localhost", "web-1.internal.",
                                      "x" * 63 + ".example.com"])
def test_good_hostnames(tmp_path: Path, hostname: str) -> None:
    parse_config({**GOOD, "server": {"root": "root", "hostname": hostname}}, tmp_path)


@pytest.mark.parametrize(("section", "key", "value"), [
    ("server", "root", "ro\0ot"), ("app", "source", "a\0pp"), ("app", "path", "web\0"), ("app", "ref", "ma\0in"),
    ("app", "build_command", "pnpm\0build"), ("pm2", "bin", "/usr/bin/pm2\0"), ("pm2", "home", "\0"),
    ("health", "expect_body", "ok\0"), ("release", "include", ["a\0"]), ("release", "shared_files", ["\0.env"]),
])
def test_a_nul_is_refused_in_every_string(tmp_path: Path, section: str, key: str, value: object) -> None:
    base = {"root": "root"} if section == "server" else {}
    details = errors_of(tmp_path, **{section: {**base, key: value}})
    assert len(details) == 1 and details[0].startswith(f"{section}.{key}") and "NUL" in details[0], details


def test_paths_longer_than_linux_allows(tmp_path: Path) -> None:
    long_name = "a" * 256
    assert "longer than 255 bytes" in errors_of(tmp_path, app={"source": long_name})[0]
    deep = "/".join(["b" * 200] * 21)  # 4220 bytes
    assert "longer than a path can be (4095)" in errors_of(tmp_path, app={"source": deep})[0]
    root = errors_of(tmp_path, server={"root": "/".join(["r" * 100] * 11)})[0]
    assert root.startswith("server.root: the absolute path is ") and "at most 1024" in root
    assert "...(" not in root and len(root) < 300  # the echo is cut
    # PM2's sockets live in PM2_HOME: a longer path than a unix socket holds makes every pm2 command hang.
    home = errors_of(tmp_path, pm2={"home": str(tmp_path / ("h" * 100))})[0]
    assert home.startswith("pm2.home: is too long for PM2") and "at most 107" in home
    parse_config({**GOOD, "pm2": {"home": str(tmp_path / "h")}}, tmp_path)


def test_other_keys_that_could_never_work(tmp_path: Path) -> None:
    assert errors_of(tmp_path, app={"ref": ""})[0].startswith("app.ref: is not a git branch")
    assert errors_of(tmp_path, app={"ref": "--upload-pack=x"})[0].startswith("app.ref: is not a git branch")
    assert errors_of(tmp_path, app={"source": " "})[0].startswith("app.source: is empty")
    assert errors_of(tmp_path, server={"root": ""})[0].startswith("server.root: is empty")
    assert errors_of(tmp_path, health={"expect_status": 100})[0].startswith("health.expect_status")
    assert errors_of(tmp_path, release={"include": ["[z-a]"]})[0].startswith("release.include[0]: is not a valid glob")
    assert errors_of(tmp_path, release={"exclude": ["ok/**", ""]})[0].startswith("release.exclude[1]: is empty")
    for name in (".", "", "config//x", "./x"):
        assert errors_of(tmp_path, release={"shared_files": [name]})[0].startswith("release.shared_files[0]")
    assert errors_of(tmp_path, pm2={"bin": ""})[0].startswith("pm2.bin: is empty")


def test_a_root_in_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "loop-a").symlink_to("loop-b")
    (tmp_path / "loop-b").symlink_to("loop-a")
    with pytest.raises(ConfigError, match=r"\[server\] root cannot be resolved: Symlink loop"):
        parse_config({**GOOD, "server": {"root": "loop-a/root"}}, tmp_path)


def test_files_that_are_not_a_config(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")  # tomllib recurses: RecursionError
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(deep)
    with pytest.raises(ConfigError, match="larger than 1 MB"):
        load_config(Path("/dev/zero"))
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('[app]\nname = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(latin)
    with pytest.raises(ConfigError, match="File name too long"):
        load_config(tmp_path / ("n" * 300))
