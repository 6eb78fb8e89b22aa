"""Which package manager and version installs an app (plans/packagemanager.py), how the lockfile's format is
read (project.py) and how a binary's version is found without running it (tools.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from nextdeploy.core.config import parse_config
from nextdeploy.core.context import Context
from nextdeploy.core.errors import DiskFullError, ProjectError, ToolMissingError
from nextdeploy.core.ui import Reporter
from nextdeploy.host.executor import LocalExecutor, RunResult
from nextdeploy.host.tools import find_package_manager, manager_binary, manager_prefix, package_version
from nextdeploy.plans.build import package_manager_install_ops, staging_dir
from nextdeploy.plans.deps import reuse_blocker
from nextdeploy.plans.ops import Op, Run
from nextdeploy.plans.packagemanager import choose_manager, install_failure, parse_pin
from nextdeploy.procedures.dryrun import deploy_plan
from nextdeploy.release.installer import Installer, ensure_package_manager
from nextdeploy.release.project import Lockfile, lockfile_format, pinned_package_manager, read_yarnrc

SHA = ("+sha512.77b89e9be77a2b06ad8f403a19cae5e22976f61023f98ad323d5c30194958ebc02ee0a6ae5d13ee454f6134e4e8caf29a05f0"
       "b1a0e1d2b17bca6b6a1f1159f86")


def test_pins_are_exact_versions_with_an_optional_hash() -> None:
    assert parse_pin("pnpm@8.15.6") == ("pnpm", "8.15.6")
    assert parse_pin(f"pnpm@8.15.6{SHA}") == ("pnpm", "8.15.6")
    assert parse_pin("yarn@4.0.0-rc.42") == ("yarn", "4.0.0-rc.42")
    for loose in ("pnpm@^8", "pnpm@8", "pnpm", "pnpm@latest", None, 8):
        assert parse_pin(loose) is None


def test_a_pin_wins_and_is_installed_exactly() -> None:
    choice = choose_manager("pnpm", "pnpm-lock.yaml", "6.0", f"pnpm@8.15.6{SHA}")
    assert (choice.exact, choice.npm_spec, choice.label) == ("8.15.6", "pnpm@8.15.6", "pnpm 8.15.6")
    assert choice.reason == "package.json pins pnpm@8.15.6"
    assert choice.accepts("8.15.6") and not choice.accepts("8.15.9") and not choice.accepts(None)


@pytest.mark.parametrize(("lockfile_version", "fits", "does_not_fit", "installed"), [
    ("5.3", ["6.35.1", "7.33.7"], ["8.15.9"], "pnpm@6"),
    ("5.4", ["7.33.7"], ["8.15.9", "9.15.9"], "pnpm@7"),
    ("6.0", ["8.15.9", "9.15.9"], ["10.34.9", "12.21.0", "7.33.7"], "pnpm@8"),
    ("9.0", ["9.15.9", "10.34.9", "12.21.0"], ["8.15.9"], "pnpm@10"),
])
def test_without_a_pin_the_pnpm_lockfile_version_decides(lockfile_version: str, fits: list[str],
                                                         does_not_fit: list[str], installed: str) -> None:
    choice = choose_manager("pnpm", "pnpm-lock.yaml", lockfile_version)
    assert [choice.accepts(v) for v in fits] == [True] * len(fits)
    assert [choice.accepts(v) for v in does_not_fit] == [False] * len(does_not_fit)
    assert choice.npm_spec == installed and choice.reason == f"pnpm-lock.yaml is lockfileVersion '{lockfile_version}'"


def test_an_unknown_lockfile_version_takes_any_pnpm_and_installs_the_default() -> None:
    choice = choose_manager("pnpm", "pnpm-lock.yaml", "11.0")
    assert choice.accepts("12.21.0") and choice.accepts(None) and choice.npm_spec == "pnpm@10"


def test_yarn_classic_and_berry_are_told_apart_by_the_lockfile() -> None:
    classic = choose_manager("yarn", "yarn.lock", "1")
    assert not classic.berry and classic.npm_spec == "yarn@1" and classic.accepts("1.22.22")
    assert not classic.accepts("3.8.7")
    berry3 = choose_manager("yarn", "yarn.lock", "6")
    assert berry3.berry and berry3.npm_spec == "@yarnpkg/cli-dist@3" and berry3.accepts("3.8.7")
    assert not berry3.accepts("4.18.1") and not berry3.accepts("1.22.22")  # yarn 4 rewrites it: YN0028
    berry4 = choose_manager("yarn", "yarn.lock", "8")
    assert berry4.npm_spec == "@yarnpkg/cli-dist@4" and berry4.accepts("4.18.1") and not berry4.accepts("3.8.7")
    pinned = choose_manager("yarn", "yarn.lock", "6", "yarn@3.6.4")
    assert pinned.berry and pinned.npm_spec == "@yarnpkg/cli-dist@3.6.4"
    assert pinned.install_argv("yarn") == ("yarn", "install", "--immutable")
    assert classic.install_argv("yarn") == ("yarn", "install", "--frozen-lockfile")


@pytest.mark.parametrize(("name", "lockfile", "fmt", "pin", "words"), [
    ("pnpm", "pnpm-lock.yaml", "6.0", "pnpm@10.0.0", "lockfileVersion '6.0') can only be installed by pnpm 8-9"),
    ("pnpm", "pnpm-lock.yaml", "9.0", "pnpm@8.15.6", "can only be installed by pnpm 9 or later"),
    ("yarn", "yarn.lock", "1", "yarn@3.6.4", "(a yarn 1 lockfile) can only be installed by yarn 1"),
    ("yarn", "yarn.lock", "6", "yarn@1.22.22", "__metadata version 6) can only be installed by yarn 3"),
    ("yarn", "yarn.lock", "6", "yarn@4.5.0", "can only be installed by yarn 3"),
])
def test_a_pin_that_cannot_install_its_lockfile_is_refused_with_the_fix(name: str, lockfile: str, fmt: str,
                                                                         pin: str, words: str) -> None:
    with pytest.raises(ProjectError) as raised:
        choose_manager(name, lockfile, fmt, pin)  # type: ignore[arg-type]
    assert words in raised.value.message and f"pins {pin}" in raised.value.message
    assert raised.value.hint is not None and f"commit {lockfile}" in raised.value.hint


def test_a_loose_or_foreign_pin_is_noted_and_the_lockfile_decides() -> None:
    loose = choose_manager("pnpm", "pnpm-lock.yaml", "6.0", "pnpm@^8")
    assert loose.exact is None and loose.npm_spec == "pnpm@8" and "not an exact version" in loose.notes[0]
    foreign = choose_manager("pnpm", "pnpm-lock.yaml", "9.0", "yarn@1.22.22")
    assert foreign.exact is None and "installing with pnpm" in foreign.notes[0]
    assert choose_manager("npm", "package-lock.json", None, "npm@10.9.0").accepts(None)


# What the managers print, measured (pnpm 10 and 12 on a v6 lockfile, pnpm 8 on 5.4, yarn 4 on yarn 3's).
PNPM10_V6 = [" ERR_PNPM_LOCKFILE_BREAKING_CHANGE  Lockfile /b/pnpm-lock.yaml not compatible with current pnpm", "",
             "Run with the --force parameter to recreate the lockfile."]
PNPM12_V6 = ["Error: ERR_PNPM_BROKEN_LOCKFILE", "", "  × installing dependencies",
             '  ╰─▶ The lockfile at "/b/pnpm-lock.yaml" is broken: The',
             "      lockfileVersion of 6.0 is incompatible with this version of pnpm, which",
             "      supports lockfileVersion 9.x (1:18)"]
PNPM8_V54 = [" ERR_PNPM_FROZEN_LOCKFILE_WITH_OUTDATED_LOCKFILE  Cannot perform a frozen installation because the "
             "version of the lockfile is incompatible with this version of pnpm"]
PNPM_OUTDATED = [' ERR_PNPM_OUTDATED_LOCKFILE  Cannot install with "frozen-lockfile" because pnpm-lock.yaml is not up '
                 "to date with apps/web/package.json"]
YARN4_V6 = ["➤ YN0000: ┌ Post-resolution validation",
            "➤ YN0028: │ The lockfile would have been modified by this install, which is explicitly forbidden.",
            "➤ YN0000: · Failed with errors in 6s 631ms"]
YARN1_OUTDATED = ["error Your lockfile needs to be updated, but yarn was run with `--frozen-lockfile`."]


def test_an_install_failure_names_an_unreadable_lockfile_as_such() -> None:
    choice = choose_manager("pnpm", "pnpm-lock.yaml", "6.0")
    for log in (PNPM10_V6, PNPM12_V6, PNPM8_V54):
        diagnosis = install_failure(choice, "10.34.9", "pnpm-lock.yaml", log)
        assert diagnosis is not None
        what, fix = diagnosis
        assert what.startswith("pnpm 10.34.9 cannot read pnpm-lock.yaml (ERR_PNPM_")
        assert what.endswith("; pnpm-lock.yaml is lockfileVersion '6.0'")
        assert '"packageManager"' in fix and "out of date" not in what + fix
    what, fix = install_failure(choice, "8.15.9", "pnpm-lock.yaml", PNPM_OUTDATED) or ("", "")
    assert what == "pnpm-lock.yaml is out of date with package.json (ERR_PNPM_OUTDATED_LOCKFILE)"
    assert fix == "run `pnpm install` (with pnpm 8.15.9) and commit pnpm-lock.yaml"


def test_yarn_failures_name_the_rewrite_and_the_out_of_date_lockfile() -> None:
    berry = choose_manager("yarn", "yarn.lock", "6")
    what, fix = install_failure(berry, "4.18.1", "yarn.lock", YARN4_V6) or ("", "")
    assert what.startswith("yarn 4.18.1 would have to rewrite yarn.lock (YN0028)") and "another yarn" in what
    assert "run `yarn install` with yarn 4.18.1 and commit yarn.lock" in fix
    classic = choose_manager("yarn", "yarn.lock", "1")
    assert install_failure(classic, "1.22.22", "yarn.lock", YARN1_OUTDATED) == (
        "yarn.lock is out of date with package.json", "run `yarn install` (with yarn 1.22.22) and commit yarn.lock")
    assert install_failure(berry, "3.8.7", "yarn.lock", ["➤ YN0001: │ Error: connect ECONNREFUSED"]) is None


def test_lockfile_formats_are_read_from_the_head_of_the_file(tmp_path: Path) -> None:
    pnpm = tmp_path / "pnpm-lock.yaml"
    for text, expected in (("lockfileVersion: '6.0'\n\nsettings:\n", "6.0"), ("lockfileVersion: 5.4\n", "5.4"),
                           ('lockfileVersion: "9.0"\n', "9.0"), ("importers:\n", None)):
        pnpm.write_text(text)
        assert lockfile_format(Lockfile("pnpm", pnpm)) == expected
    yarn = tmp_path / "yarn.lock"
    yarn.write_text('# This file is generated by running "yarn install"\n\n__metadata:\n  version: 6\n  cacheKey: 8\n')
    assert lockfile_format(Lockfile("yarn", yarn)) == "6"
    yarn.write_text("# THIS IS AN AUTOGENERATED FILE.\n# yarn lockfile v1\n\n\nnext@16.4.6:\n  version \"16.4.6\"\n")
    assert lockfile_format(Lockfile("yarn", yarn)) == "1"


def test_the_workspace_roots_pin_governs_and_yarnrc_settings_are_read(tmp_path: Path) -> None:
    app = tmp_path / "apps" / "web"
    app.mkdir(parents=True)
    (app / "package.json").write_text(json.dumps({"packageManager": "pnpm@9.1.0"}))
    (tmp_path / "package.json").write_text(json.dumps({"packageManager": "pnpm@8.15.6"}))
    lockfile = Lockfile("pnpm", tmp_path / "pnpm-lock.yaml")
    assert pinned_package_manager(lockfile, app) == "pnpm@8.15.6"
    (tmp_path / "package.json").write_text("{}")
    assert pinned_package_manager(lockfile, app) == "pnpm@9.1.0"
    (tmp_path / ".yarnrc.yml").write_text('nodeLinker: "node-modules"\nnpmScopes:\n  acme:\n    npmRegistryServer: x\n'
                                          "yarnPath: .yarn/releases/yarn-3.6.4.cjs # pinned\n")
    assert read_yarnrc(tmp_path) == {"nodeLinker": "node-modules", "yarnPath": ".yarn/releases/yarn-3.6.4.cjs"}
    assert read_yarnrc(app) == {}


def test_dependency_reuse_is_off_with_a_reason_for_yarn_plug_n_play_only() -> None:
    berry = choose_manager("yarn", "yarn.lock", "6")
    assert reuse_blocker(berry, {"nodeLinker": "node-modules"}, {}) is None
    assert "nodeLinker is 'pnp'" in (reuse_blocker(berry, {}, {}) or "")
    assert reuse_blocker(berry, {}, {"YARN_NODE_LINKER": "node-modules"}) is None
    assert reuse_blocker(choose_manager("yarn", "yarn.lock", "1"), {}, {}) is None
    assert reuse_blocker(choose_manager("pnpm", "pnpm-lock.yaml", "9.0"), {}, {}) is None


def _npm_install(prefix: Path, package: str, version: str, bin_name: str, entry: str) -> Path:
    """The files ``npm install --prefix`` leaves for a package with one binary."""
    package_dir = prefix / "node_modules" / package
    (package_dir / Path(entry).parent).mkdir(parents=True, exist_ok=True)
    (package_dir / "package.json").write_text(json.dumps({"name": package, "version": version}))
    (package_dir / entry).write_text("#!/usr/bin/env node\n")
    (package_dir / entry).chmod(0o755)
    bin_dir = prefix / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / bin_name).symlink_to(Path("..") / package / entry)
    return bin_dir / bin_name


def test_a_binarys_version_is_read_from_its_package_without_running_it(tmp_path: Path) -> None:
    pnpm = _npm_install(tmp_path / "a", "pnpm", "8.15.6", "pnpm", "bin/pnpm.cjs")
    berry = _npm_install(tmp_path / "b", "@yarnpkg/cli-dist", "3.8.7", "yarn", "bin/yarn.js")
    assert package_version(str(pnpm), "pnpm") == "8.15.6"
    assert package_version(str(berry), "yarn") == "3.8.7"
    assert package_version(str(berry), "pnpm") is None  # not a pnpm
    shim = tmp_path / "corepack" / "shims" / "pnpm"
    shim.parent.mkdir(parents=True)
    (tmp_path / "corepack" / "package.json").write_text(json.dumps({"name": "corepack", "version": "0.34.0"}))
    shim.write_text("#!/bin/sh\n")
    assert package_version(str(shim), "pnpm") is None


def test_the_package_manager_is_found_on_path_or_in_its_own_tools_prefix(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path_bin = _npm_install(tmp_path / "global", "pnpm", "12.21.0", "pnpm", "pnpm")
    monkeypatch.setenv("PATH", str(path_bin.parent))
    tools = tmp_path / "tools"
    current = choose_manager("pnpm", "pnpm-lock.yaml", "9.0")
    assert find_package_manager(current, tools) == (str(path_bin), "12.21.0")
    pinned = choose_manager("pnpm", "pnpm-lock.yaml", "6.0", "pnpm@8.15.6")
    assert find_package_manager(pinned, tools) is None  # pnpm 12 on PATH cannot read a v6 lockfile
    assert manager_binary(tools, pinned) == tools / "pnpm-8.15.6" / "node_modules" / ".bin" / "pnpm"
    installed = _npm_install(tools / "pnpm-8.15.6", "pnpm", "8.15.6", "pnpm", "bin/pnpm.cjs")
    assert find_package_manager(pinned, tools) == (str(installed), "8.15.6")
    # pm2's shared prefix of earlier versions counts when its pnpm fits.
    legacy = _npm_install(tools, "pnpm", "10.34.9", "pnpm", "bin/pnpm.cjs")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_package_manager(current, tools) == (str(legacy), "10.34.9")


class NpmFails(LocalExecutor):
    """Runs file ops; every command fails with ``output`` (what npm printed)."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self.output = output

    def apply(self, op: Op) -> RunResult:
        return RunResult(1, "", self.output) if isinstance(op, Run) else super().apply(op)


@pytest.mark.parametrize(("npm_output", "error", "words"), [
    ("npm error code E404\nnpm error 404 Not Found - GET https://registry.npmjs.org/pnpm\nnpm error A complete log "
     "of this run can be found in: /x.log\n", ToolMissingError,
     "could not install pnpm 8.15.6 (package.json pins pnpm@8.15.6) with npm: npm error code E404; npm error 404 "
     "Not Found - GET https://registry.npmjs.org/pnpm"),
    ("npm error code ENOSPC\nnpm error nospc ENOSPC: no space left on device, write\n", DiskFullError,
     "installing pnpm 8.15.6 with npm ran out of disk space"),
])
def test_a_package_manager_npm_cannot_install_is_said_and_leaves_no_half_tool(
        tmp_path: Path, npm_output: str, error: type[Exception], words: str) -> None:
    config = parse_config({"app": {"name": "x", "source": "app"}, "server": {"root": str(tmp_path / "root")}},
                          tmp_path)
    ctx = Context(config, NpmFails(npm_output), Reporter(force_plain=True, stream=io.StringIO()))
    choice = choose_manager("pnpm", "pnpm-lock.yaml", "6.0", "pnpm@8.15.6")
    prefix = manager_prefix(ctx.paths.tools_dir, choice)
    installer = Installer(choice, str(manager_binary(ctx.paths.tools_dir, choice)), "8.15.6",
                          setup=package_manager_install_ops("/usr/bin/npm", choice, prefix, 60))
    with pytest.raises(error) as raised:
        ensure_package_manager(ctx, installer)
    assert str(raised.value.args[0]) == words
    assert not staging_dir(prefix).exists() and not prefix.exists()


def test_the_dry_run_shows_the_install_the_deploy_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fixture = Path(__file__).parents[1] / "fixtures" / "yarn-berry"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # npm, and no yarn 3.8.7
    root = tmp_path / "root"
    config = parse_config({"app": {"name": "x", "source": str(fixture)}, "server": {"root": str(root)}}, tmp_path)
    ctx = Context(config, LocalExecutor(), Reporter(force_plain=True))
    steps = {step.title: step.ops for step in deploy_plan(ctx, "r1")}
    prefix = root / "tools" / "yarn-3.8.7"
    setup = [op.render() for op in steps["install yarn 3.8.7 with npm (package.json pins yarn@3.8.7; nothing on this "
                                         "host fits)"]]
    assert f"(cd {prefix}.partial && /usr/bin/npm install --no-audit --no-fund --no-package-lock " \
        "@yarnpkg/cli-dist@3.8.7)" in setup
    install, build = next(ops for title, ops in steps.items() if title.startswith("install and build"))
    bin_dir = prefix / "node_modules" / ".bin"
    assert install.render() == (
        f'(cd {root}/builds/r1/src && PATH={bin_dir}:"$PATH" YARN_GLOBAL_FOLDER={root}/cache/yarn-berry '
        f"NEXT_TELEMETRY_DISABLED=1 CI=1 NEXT_DEPLOYMENT_ID=r1 nice -n 10 {bin_dir}/yarn install --immutable) >> "
        f"{root}/logs/build-r1.log 2>&1")
    assert "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY=***" in build.render() and f"{bin_dir}/yarn run build" in build.render()
    assert not root.exists()

    git = parse_config({"app": {"name": "x", "source": "https://example.invalid/x.git"},
                        "server": {"root": str(root)}}, tmp_path)
    titles = [step.title for step in deploy_plan(Context(git, LocalExecutor(), Reporter(force_plain=True)), "r1")]
    assert any(title.endswith("the package manager and its version are read from the source at deploy time "
                              "(shown: pnpm)")
               for title in titles)
