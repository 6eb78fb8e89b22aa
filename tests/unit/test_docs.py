"""The config reference in the docs is the config nextdeploy reads: every key, each default as stated."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from nextdeploy.core.config import Config, parse_config

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {("app", "name"), ("app", "source"), ("server", "root")}  # examples, not defaults


def toml_block(name: str) -> str:
    found = re.search(r"```toml\n(.*?)```", (ROOT / name).read_text(encoding="utf-8"), re.S)
    assert found, f"{name} has no ```toml block"
    return found.group(1)


def documented_keys(block: str) -> set[tuple[str, str]]:
    """(section, key) of every key the block sets or shows commented out (``# key = ...``)."""
    keys: set[tuple[str, str]] = set()
    section = ""
    for line in block.splitlines():
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            section = header.group(1)
        key = re.match(r"^#? ?(\w+) = ", line)
        if key and section:
            keys.add((section, key.group(1)))
    return keys


def model_keys() -> set[tuple[str, str]]:
    keys = set()
    for section, field in Config.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys.update((section, key) for key in model.model_fields)
    return keys


@pytest.mark.parametrize("name", ["README.md", "docs/config.md"])
def test_the_documented_config_is_valid_and_states_the_defaults(name: str, tmp_path: Path) -> None:
    data: dict[str, Any] = tomllib.loads(toml_block(name))
    parse_config(data, tmp_path)  # valid as written
    app, server = data["app"], data["server"]
    defaults = parse_config({"app": {"name": app["name"], "source": app["source"]},
                             "server": {"root": server["root"]}}, tmp_path)
    for section, values in data.items():
        for key, value in values.items():
            if (section, key) not in REQUIRED:
                stated = getattr(getattr(defaults, section), key)
                assert stated == value, f"{name}: [{section}] {key} = {value!r}, but the default is {stated!r}"


def test_docs_config_names_every_key() -> None:
    missing = model_keys() - documented_keys(toml_block("docs/config.md"))
    assert not missing, f"docs/config.md does not document: {sorted(missing)}"
    unknown = documented_keys(toml_block("README.md")) - model_keys()
    assert not unknown, f"README.md documents keys that do not exist: {sorted(unknown)}"


def test_the_readme_is_a_short_manual_with_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "scripts/test" in readme and "scripts/test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
