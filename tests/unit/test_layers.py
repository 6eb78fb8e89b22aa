"""Where host work happens: processes and file trees are touched in host/ (and pm2/'s socket), not in the
build, the CLI or the PM2 client; the executor carries out ops and plans nothing."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "nextdeploy"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_executor_imports_no_planner() -> None:
    planners = {name for name in _imports(SRC / "host" / "executor.py")
                if name.startswith("nextdeploy.plans") and not name.startswith("nextdeploy.plans.ops")}
    assert planners == set()


def test_the_build_the_cli_and_the_pm2_client_run_no_process_and_copy_no_tree_themselves() -> None:
    offenders = {
        str(path.relative_to(SRC)): sorted(name for name in _imports(path) if name in ("subprocess", "shutil"))
        for folder in ("release", "cli", "pm2") for path in sorted((SRC / folder).glob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}
