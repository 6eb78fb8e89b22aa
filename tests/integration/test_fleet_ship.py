"""Issue 23, items 4: a release shipped to real sshd hosts as a delta, and the static files of a release that
appears beside a running one served by it (cross-host version skew). Two real builds of examples/hello
(v1 and v2: a code-only change), made once for the module by local deploys."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import have_node_tools
from nextdeploy.cli.main import format_error
from nextdeploy.core.errors import ExitCode, HostPathError
from nextdeploy.fleet.ship import ShipResult, ship
from nextdeploy.remote.argv import SshSettings
from nextdeploy.remote.errors import HostUnreachableError
from nextdeploy.remote.ssh import SshTransport
from support.hosts import Hosts, hosts_or_skip, nginx_in_front
from support.nshost import Host, free_port, wait_listening
from support.site import Site

pytestmark = pytest.mark.integration

ROOT = "/srv/app"  # the deploy root on every host


@dataclass
class Built:
    site: Site
    a: str  # v1's release id
    b: str  # v2's: the same app with one changed line of code

    def release(self, release_id: str) -> Path:
        return self.site.root / "releases" / release_id


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    if not have_node_tools():
        pytest.skip("needs node, and pnpm + pm2 under .tools/ (run scripts/test)")
    site = Site(tmp_path_factory.mktemp("site"))
    try:
        site.write_config(skew={"keep_assets_of": 1})  # each release serves its own static files only
        site.deploy("v1").expect_ok()
        a = site.current()
        site.deploy("v2").expect_ok()
        b = site.current()
        assert a and b and a < b
        yield Built(site, a, b)
    finally:
        site.close()


def own_static(release: Path) -> set[str]:
    return set(json.loads((release / ".nextdeploy" / "static-files.json").read_text())["files"])


def test_a_running_release_serves_the_static_files_of_a_newer_release_that_appears_beside_it(built: Built) -> None:
    """v1 live, v2's release dir under releases/ but not live: v1's workers answer v2's chunks (200, the
    right bytes, cacheable as immutable), including when v2's dir appears after they started."""
    site = built.site
    site.nextdeploy("rollback").expect_ok()  # v1 live again, its workers started anew
    assert site.current() == built.a and site.version() == "v1"
    only_b = sorted(own_static(built.release(built.b)) - own_static(built.release(built.a)))
    chunk = next(name for name in only_b if name.endswith(".js"))
    assert not (built.release(built.a) / ".next" / "static" / chunk).exists()  # nothing bridged into v1
    url = f"/_next/static/{chunk}"
    expected = (built.release(built.b) / ".next" / "static" / chunk).read_text()

    # v2's dir gone: v1 answers 404, as Next does for any file it does not have.
    aside = site.base / "aside"
    aside.mkdir()
    os.rename(built.release(built.b), aside / built.b)
    try:
        assert site.get(url)[0] == 404
    finally:
        os.rename(aside / built.b, built.release(built.b))
    # It appears after v1's workers started: every worker serves its files (several requests reach both).
    for _ in range(6):
        status, body, headers = site.get(f"{url}?dpl={built.b}")
        assert status == 200 and body == expected
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        assert headers["content-type"].startswith("application/javascript")
        assert headers["x-nextdeploy-release"] == built.a and headers["x-nextdeploy-asset-of"] == built.b
    # A file linked into v1's own static dir after its workers started (Next, which lists the dir at start,
    # answers 404 for it): served too, with v2's dir out of the way so that it can only come from v1's.
    linked = built.release(built.a) / ".next" / "static" / chunk
    os.link(built.release(built.b) / ".next" / "static" / chunk, linked)
    os.rename(built.release(built.b), aside / built.b)
    try:
        for _ in range(4):
            status, body, headers = site.get(url)
            assert status == 200 and body == expected and headers["x-nextdeploy-asset-of"] == built.a
    finally:
        os.rename(aside / built.b, built.release(built.b))
        linked.unlink()
    # v1's own files are still Next's; a name no release has is still 404; no path escapes releases/.
    own_a = next(name for name in sorted(own_static(built.release(built.a))) if name.endswith(".js"))
    assert "x-nextdeploy-asset-of" not in site.get(f"/_next/static/{own_a}")[2]
    assert site.get("/_next/static/chunks/no-such-chunk.js")[0] == 404
    assert site.get(f"/_next/static/..%2F..%2F..%2F{built.b}%2F.nextdeploy%2Fmanifest.json")[0] == 404
    # An older release's files are not served by a newer one (they leave the skew window).
    site.nextdeploy("rollback", "--to", built.b).expect_ok()
    only_a = sorted(own_static(built.release(built.a)) - own_static(built.release(built.b)))
    assert site.get(f"/_next/static/{only_a[0]}")[0] == 404


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    with hosts_or_skip(tmp_path_factory.mktemp("hosts")) as started:
        yield started


def tree(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Every entry under ``root``: (kind, content or link target, mode)."""
    found: dict[str, tuple[str, bytes | str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            relative = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("link", os.readlink(path), 0)
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir", b"", stat.S_IMODE(info.st_mode))
            else:
                found[relative] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode))
    return found


def test_a_code_only_change_ships_as_a_small_delta_of_hard_links(built: Built, hosts: Hosts) -> None:
    local_a, local_b = built.release(built.a), built.release(built.b)
    roots = {name: ROOT for name in hosts.names}
    with SshTransport(SshSettings(config_file=hosts.ssh_config)) as transport:
        first = ship(transport, roots, local_a)
        second = ship(transport, roots, local_b)
    for name in hosts.names:
        print(figures("A (first)", first[name]))
        print(figures("B (code-only change)", second[name]))
    local = tree(local_b)
    for host in hosts.hosts:
        on_host_a, on_host_b = host.path(f"{ROOT}/releases/{built.a}"), host.path(f"{ROOT}/releases/{built.b}")
        assert first[host.name].files_transferred > 500 and first[host.name].sent_fraction > 0.5
        assert second[host.name].sent_fraction < 0.10, figures("B", second[host.name])
        assert second[host.name].link_dests == (f"{ROOT}/releases/{built.a}",)
        # Byte-identical to the local release (symlinks as they are, modes too), and nothing half-shipped.
        assert tree(on_host_b) == local
        assert sorted(os.listdir(host.path(f"{ROOT}/releases"))) == sorted([built.a, built.b])
        # Unchanged files are hard links of A's on the host, but never under .next/ outside .next/static.
        linked = unlinked = 0
        for relative, (kind, content, _mode) in local.items():
            if kind != "file" or not (on_host_a / relative).is_file():
                continue
            same_bytes = (local_a / relative).is_file() and (local_a / relative).read_bytes() == content
            shared = os.path.samefile(on_host_a / relative, on_host_b / relative)
            runtime_writable = relative.startswith(".next/") and not relative.startswith(".next/static/")
            if runtime_writable:
                assert not shared, relative
            elif same_bytes:
                assert shared, relative
                linked += 1
            else:
                assert not shared, relative
                unlinked += 1
        assert linked > 500 and unlinked >= 1, (linked, unlinked)
        print(f"{host.name}: {linked} files of B are hard links of A's, {unlinked} changed")


def test_shipping_again_sends_almost_nothing_and_a_cut_off_ship_never_looks_complete(
        built: Built, hosts: Hosts) -> None:
    """The same release again (a retry): compared, nothing sent. A ship cut off leaves only the temp dir
    (the release is absent), and the next ship completes it."""
    local_b = built.release(built.b)
    web1 = hosts["web1"]
    with SshTransport(SshSettings(config_file=hosts.ssh_config)) as transport:
        again = ship(transport, {"web1": ROOT}, local_b)["web1"]
        assert again.literal_bytes == 0 and again.sent_fraction < 0.05
        # A ship cut off after a part arrived: the release dir is absent, the temp dir holds the part.
        shutil.move(web1.path(f"{ROOT}/releases/{built.b}"), web1.path(f"{ROOT}/releases/.ship-{built.b}"))
        shutil.rmtree(web1.path(f"{ROOT}/releases/.ship-{built.b}/node_modules"))
        assert not web1.path(f"{ROOT}/releases/{built.b}").exists()
        resumed = ship(transport, {"web1": ROOT}, local_b)["web1"]
    assert tree(web1.path(f"{ROOT}/releases/{built.b}")) == tree(local_b)
    assert not web1.path(f"{ROOT}/releases/.ship-{built.b}").exists()
    assert resumed.literal_bytes == 0  # node_modules came from A's on the host
    print(figures("B again", again), figures("B resumed", resumed), sep="\n")


def test_an_unreachable_host_is_named_after_the_others_are_done(built: Built, hosts: Hosts) -> None:
    """web3 down: the ship fails naming it, the other hosts still get the whole release (nothing runs on
    behind the caller's back), and web3 has nothing that looks like a release."""
    other = "/srv/other"
    hosts["web3"].stop_sshd()
    try:
        settings = SshSettings(config_file=hosts.ssh_config, connect_timeout=2)
        with SshTransport(settings) as transport, pytest.raises(HostUnreachableError) as raised:
            ship(transport, {name: other for name in hosts.names}, built.release(built.a))
    finally:
        hosts["web3"].start_sshd()
    assert raised.value.host == "web3" and "cannot reach web3" in raised.value.message
    for name in ("web1", "web2"):
        assert tree(hosts[name].path(f"{other}/releases/{built.a}")) == tree(built.release(built.a))
    assert not hosts["web3"].path(other).exists()


def test_a_file_in_the_way_on_a_host_is_a_one_line_error_naming_it(built: Built, hosts: Hosts) -> None:
    blocked = "/srv/blocked"
    hosts["web1"].path(f"{blocked}/releases").mkdir(parents=True)
    hosts["web1"].path(f"{blocked}/releases/{built.a}").write_text("not a release\n")
    with SshTransport(SshSettings(config_file=hosts.ssh_config)) as transport, \
            pytest.raises(HostPathError) as raised:
        ship(transport, {"web1": blocked}, built.release(built.a))
    lines = format_error(raised.value)
    assert len(lines) == 1 and f"cannot rename {blocked}/releases/.ship-{built.a}" in lines[0], lines
    assert "on web1" in lines[0] and "(fix: " in lines[0] and raised.value.exit_code == ExitCode.HOST_PATH
    assert hosts["web1"].path(f"{blocked}/releases/{built.a}").read_text() == "not a release\n"  # untouched


# Runs a release's launcher on a host, off PM2 (no hold), detached from the ssh session: prints its pid.
_START = ('cd "$1" && PORT="$2" HOSTNAME="$3" NODE_ENV=production NEXTDEPLOY_HOLD=0 NEXT_TELEMETRY_DISABLED=1 '
          'setsid node .nextdeploy/launcher.cjs </dev/null >"$4" 2>&1 & echo $!')
# Stops a process on a host by its pid there (each host has its own pids): signal $1, then wait up to 15 s.
_STOP = ('kill -"$1" "$2" 2>/dev/null; '
         'for i in $(seq 300); do kill -0 "$2" 2>/dev/null || exit 0; sleep 0.05; done; exit 1')
_CHUNK = re.compile(r"""["'](/_next/static/[^"'?\s\\]+?\.(?:js|css))(\?[^"'\s\\]*)?\\?["']""")


def test_a_page_from_a_switched_host_gets_its_chunks_through_nginx_from_hosts_not_yet_switched(
        built: Built, hosts: Hosts, tmp_path: Path) -> None:
    """Three hosts serve v1 behind nginx (retries off); v2 is shipped to all of them and web1 switches to
    it. A page from web1 names v2's chunks; requested through nginx, whichever host answers, every one
    is 200 with v2's bytes: web2 and web3, still on v1, serve them from v2's shipped dir."""
    root = "/srv/skew"
    port = free_port(hosts.hosts[0].address)
    started: list[tuple[str, int]] = []  # host, the server's pid there

    def start(host: Host, release_id: str) -> None:
        said = transport.run(host.name, ["sh", "-c", _START, "sh", f"{root}/releases/{release_id}", str(port),
                                         host.address, f"{root}/{release_id}.log"])
        assert said.ok, said.error_text
        started.append((host.name, int(said.text.split()[-1])))
        wait_listening(host.address, port, timeout=60)

    with SshTransport(SshSettings(config_file=hosts.ssh_config)) as transport:
        try:
            ship(transport, {name: root for name in hosts.names}, built.release(built.a))
            for host in hosts.hosts:
                start(host, built.a)
            front = hosts.hosts[0].address.rsplit(".", 1)[0] + ".1"
            upstreams = [f"{host.address}:{port}" for host in hosts.hosts]
            with nginx_in_front(tmp_path / "nginx", front, upstreams) as nginx:
                ship(transport, {name: root for name in hosts.names}, built.release(built.b))
                # web1 switches to v2 (its v1 server stops first: the same port).
                stopped = transport.run("web1", ["sh", "-c", _STOP, "sh", "TERM", str(started[0][1])])
                assert stopped.ok, stopped.error_text
                start(hosts["web1"], built.b)
                page = fetch(f"http://{hosts['web1'].address}:{port}/")
                assert page[1]["x-nextdeploy-release"] == built.b
                chunks = sorted({match[1] for match in _CHUNK.finditer(page[0].decode())})
                only_b = [c for c in chunks if c.removeprefix("/_next/static/") not in own_static(
                    built.release(built.a))]
                assert only_b, "v1 and v2 share every chunk of the page: the test would prove nothing"
                answered_by = set()
                for chunk in only_b:
                    for _ in range(3):  # round robin: every host answers each chunk once
                        body, headers = fetch(f"{nginx.url}{chunk}?dpl={built.b}")
                        assert body == (built.release(built.b) / ".next" / "static" /
                                        chunk.removeprefix("/_next/static/")).read_bytes()
                        answered_by.add(headers["x-nextdeploy-release"])
                assert answered_by == {built.a, built.b}
                statuses = {line.split()[0] for line in nginx.access_log() if "/_next/static/" in line}
                assert statuses == {"200"}, nginx.access_log()
                print(f"{len(only_b)} chunks of v2's page, each through nginx 3 times: all 200 "
                      f"(answered by v1 and v2 hosts)")
        finally:
            for name, pid in started:
                transport.run(name, ["sh", "-c", _STOP, "sh", "KILL", str(pid)])


def fetch(url: str) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(), {key.lower(): value for key, value in response.headers.items()}


def figures(what: str, result: ShipResult) -> str:
    return (f"{result.host} {what}: sent {result.bytes_sent:,} bytes of a {result.release_bytes:,}-byte release "
            f"({result.sent_fraction:.1%}; {result.literal_bytes:,} literal, {result.files_transferred} files) "
            f"in {result.seconds:.2f} s")
