"""The fleet tests' harness: test hosts with nginx in front, the config that names them, load and a
"page then its chunks" client through nginx, and a look at each host.

- ``running_fleet`` starts N hosts (tests/support/hosts.py) and a real nginx (the config docs/fleet.md shows)
  in front of the app port every host serves on its own loopback address, the ``hostname`` of its
  ``[[hosts]]`` entry. ``Fleet.write_config`` writes the nextdeploy.toml that deploys to them.
- ``load_through`` runs bounded load through nginx, keep-alive and a new connection per request at once.
- ``PageThenChunks`` loads a page through nginx, then every ``/_next/static`` file it references (each
  request may land on another host), over and over for a bounded time; it records the release
  (``x-nextdeploy-release``) of every answer and counts every answer that is not a 200.
- ``Fleet.live_release`` and ``Fleet.leftovers`` look at one host: its ``current`` over ssh, and what still
  runs in its namespace.
"""

from __future__ import annotations

import html
import json
import re
import shlex
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextdeploy.demo.loadgen import RELEASE_HEADER, BackgroundLoad, LoadResult
from support.hosts import Hosts, Nginx, hosts_or_skip, nginx_in_front
from support.nshost import Host, free_port
from support.processes import zombie
from support.site import Run, _toml, config_text, run_nextdeploy

# What a fleet is deployed with, in this order, by the tests and by the CI workflow of docs/examples/deploy.yml
# alike (tests/unit/test_ci_workflow.py checks the workflow).
FLEET_COMMANDS = ("setup", "deploy")

LOAD_RATE = 100  # requests per second and per client kind: 200 req/s through nginx in all
MAX_SECONDS = 120  # hard bound on every load and client run
TAIL_SECONDS = 2.0  # load goes on this long after the body of ``load_through`` returns

STATIC_URL = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["'](/_next/static/[^"']+)["']""")


@dataclass
class Fleet:
    """Running test hosts and the nginx in front of them."""

    hosts: Hosts
    nginx: Nginx
    port: int  # the app's port on every host
    base: Path  # the controller's side: the config, its build dir
    config: Path | None = None  # the last config ``write_config`` wrote

    @property
    def url(self) -> str:
        """The fleet's public address: nginx."""
        return self.nginx.url

    def upstream(self, host: Host) -> str:
        return f"{host.address}:{self.port}"

    def write_config(self, path: Path, source: Path, *, name: str = "hello", root: str = "/srv/app",
                     extra: str = "", **sections: dict[str, Any]) -> Path:
        """A nextdeploy.toml deploying ``source`` to every host (``[[hosts]]``: the ssh alias and the host's
        own address as its hostname), through the test ssh config, the controller's builds under ``base``
        (not the user's ~/.cache); ``sections`` add or override keys, e.g. rollout={"batch": 2}; ``extra`` is
        appended as is. ``nextdeploy`` runs against the last one written."""
        config: dict[str, dict[str, Any]] = {
            "app": {"name": name, "source": str(source)},
            "server": {"root": root, "port": self.port},
            "ssh": {"config": str(self.hosts.ssh_config)},
            "build": {"dir": str(self.base / "build")},
        }
        hosts = "".join(f"[[hosts]]\nssh = {_toml(host.name)}\nhostname = {_toml(host.address)}\n"
                        for host in self.hosts.hosts)
        path.write_text(config_text(config, sections) + hosts + extra)
        self.config = path
        return path

    def nextdeploy(self, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> Run:
        """Run the real CLI on the controller (this machine) against the config ``write_config`` wrote."""
        assert self.config is not None, "write_config first"
        return run_nextdeploy(self.config, *args, timeout=timeout, env=env)

    def served_by(self) -> Counter[str]:
        """How many requests nginx passed to each host so far (by host name), from its access log."""
        names = {self.upstream(host): host.name for host in self.hosts.hosts}
        served: Counter[str] = Counter()
        for line in self.nginx.access_log():
            upstream = line.split(" ", 2)[1]
            served[names.get(upstream, upstream)] += 1
        return served

    def live_release(self, name: str, root: str = "/srv/app") -> str | None:
        """The release ``<root>/current`` points to on host ``name`` (read over ssh), or None without one."""
        target = self.hosts.ssh(name, f"readlink {shlex.quote(root + '/current')} || true").stdout.strip()
        return Path(target).name if target else None

    def live_releases(self, root: str = "/srv/app") -> dict[str, str | None]:
        return {name: self.live_release(name, root) for name in self.hosts.names}

    def versions(self, names: list[str] | None = None) -> dict[str, str]:
        """What each host's app (or those of ``names``) answers on its own address (not through nginx): the
        example app's version."""
        found = {}
        for host in self.hosts.hosts:
            if names is not None and host.name not in names:
                continue
            with urllib.request.urlopen(f"http://{host.address}:{self.port}/api/health", timeout=5) as response:
                found[host.name] = json.loads(response.read())["version"]
        return found

    def release_dirs(self, root: str = "/srv/app", names: list[str] | None = None) -> dict[str, list[str]]:
        """The names under each host's (or those of ``names``) ``<root>/releases``."""
        return {host.name: sorted(path.name for path in host.path(f"{root}/releases").iterdir())
                for host in self.hosts.hosts if names is None or host.name in names}

    def leftovers(self, name: str) -> dict[int, str]:
        """What runs in host ``name``'s namespace besides the host itself (its holder and pid 1, its sshd and
        the sshd processes of open ssh connections): pid -> command line. A zombie (dead, waiting for its
        parent to reap it) runs nothing and is not counted, nor is a process in the middle of its exit (its
        memory already released: an empty command line, as of an ssh session's shell just ended)."""
        host = self.hosts[name]
        own = host.own_pids()
        found = {}
        for pid in host.processes():
            command = command_line(pid)
            if pid not in own and command and not command.startswith("sshd:") and not zombie(pid):
                found[pid] = command
        return found


def command_line(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None  # gone meanwhile


def fleet_port(hosts: Hosts) -> int:
    """A port free on every host's address (the app listens on the same port everywhere)."""
    for _ in range(20):
        port = free_port(hosts.hosts[0].address)
        if all(port_free(host.address, port) for host in hosts.hosts[1:]):
            return port
    raise RuntimeError("no port free on every host")


def port_free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


@contextmanager
def running_fleet(base: Path, count: int = 3) -> Iterator[Fleet]:
    """``count`` test hosts web1..webN and nginx in front of the app port they will serve, on 127.X.Y.1;
    everything stopped at the end (the hosts with all they ran). Skips the test where hosts cannot run."""
    with hosts_or_skip(base / "hosts", count) as hosts:
        port = fleet_port(hosts)
        front = hosts.hosts[0].address.rsplit(".", 1)[0] + ".1"
        upstreams = [f"{host.address}:{port}" for host in hosts.hosts]
        with nginx_in_front(base / "nginx", front, upstreams) as nginx:
            yield Fleet(hosts, nginx, port, base)


# Load through nginx ------------------------------------------------------------------------------------

@contextmanager
def load_through(fleet: Fleet, path: str = "/", rate: float = LOAD_RATE) -> Iterator[dict[str, LoadResult]]:
    """Load through nginx while the body runs and TAIL_SECONDS after: keep-alive and a new connection per
    request at once, ``rate`` req/s each, each bounded by MAX_SECONDS and rate * MAX_SECONDS requests. Yields
    a dict that gets each run's result under "keepalive" and "new-connection"."""
    results: dict[str, LoadResult] = {}
    loads = {mode: BackgroundLoad(fleet.url + path, rate=rate, duration=MAX_SECONDS, mode=mode, connections=16,
                                  max_requests=int(rate * MAX_SECONDS))
             for mode in ("keepalive", "new-connection")}
    for load in loads.values():
        load.start()
    try:
        yield results
        time.sleep(TAIL_SECONDS)
    finally:
        for load in loads.values():
            load.stop()
        for mode, load in loads.items():
            results[mode] = load.result(timeout=MAX_SECONDS + 30)


def failures(results: dict[str, LoadResult]) -> dict[str, int]:
    """Failed requests per client kind."""
    return {mode: result.failed for mode, result in results.items()}


def no_failures(results: dict[str, LoadResult], seconds: float = 2.0) -> None:
    """Assert that both kinds of load ran (at least ``seconds`` worth each) and that none of it failed."""
    for mode, result in results.items():
        assert result.total >= result.rate * seconds, f"too little {mode} load to prove anything: {result.total}"
        assert result.failed == 0, f"{mode}: {result.failed} of {result.total} requests failed: {result.errors()}"


# A page, then its chunks ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    url: str
    status: int | None  # None: no answer (refused, reset, timed out)
    release: str | None  # the x-nextdeploy-release header
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Visit:
    page: Answer
    chunks: list[Answer] = field(default_factory=list)


@dataclass
class Visits:
    visits: list[Visit] = field(default_factory=list)

    def answers(self) -> list[Answer]:
        return [answer for visit in self.visits for answer in (visit.page, *visit.chunks)]

    def not_ok(self) -> list[Answer]:
        """Every answer that was not a 200 (a 404 for a chunk, a 502, no answer at all)."""
        return [answer for answer in self.answers() if not answer.ok]

    def chunks_fetched(self) -> int:
        return sum(len(visit.chunks) for visit in self.visits)

    def page_releases(self) -> Counter[str | None]:
        return Counter(visit.page.release for visit in self.visits if visit.page.ok)

    def chunk_releases(self) -> Counter[str | None]:
        return Counter(chunk.release for visit in self.visits for chunk in visit.chunks if chunk.ok)

    def across_releases(self) -> int:
        """Chunks answered by another release than their page's (the version skew that must still be 200)."""
        return sum(1 for visit in self.visits for chunk in visit.chunks
                   if chunk.release is not None and visit.page.release is not None
                   and chunk.release != visit.page.release)


def fetch(url: str, timeout: float = 5.0) -> tuple[Answer, bytes]:
    """One GET on a new connection, never retried: the answer and its body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            return Answer(url, response.status, response.headers.get(RELEASE_HEADER)), body
    except urllib.error.HTTPError as error:
        release = error.headers.get(RELEASE_HEADER) if error.headers else None
        return Answer(url, error.code, release), b""
    except Exception as error:  # refused, reset, timed out: every kind is counted
        return Answer(url, None, None, f"{type(error).__name__}: {error}"[:200]), b""


def static_urls(page: str) -> list[str]:
    """The ``/_next/static/...`` files a page's script and link tags reference, in order, each once."""
    return list(dict.fromkeys(html.unescape(path) for path in STATIC_URL.findall(page)))


class PageThenChunks:
    """A browser's first visit, again and again in a thread: GET ``path`` through nginx, then each
    ``/_next/static`` file it references. Bounded by ``seconds`` (and MAX_SECONDS) and ``max_visits``;
    ``stop()`` ends it early. Use as a context manager around a rollout, then read ``result()``."""

    def __init__(self, fleet_url: str, path: str = "/", *, seconds: float = MAX_SECONDS,
                 max_visits: int = 2000, pause: float = 0.02) -> None:
        self.url = fleet_url.rstrip("/")
        self.path = path
        self.seconds = min(seconds, MAX_SECONDS)
        self.max_visits = max_visits
        self.pause = pause
        self._stop = threading.Event()
        self._visits = Visits()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="page-then-chunks", daemon=True)

    def _run(self) -> None:
        try:
            deadline = time.monotonic() + self.seconds
            while (not self._stop.is_set() and time.monotonic() < deadline
                   and len(self._visits.visits) < self.max_visits):
                page, body = fetch(self.url + self.path)
                visit = Visit(page)
                if page.ok:
                    visit.chunks = [fetch(self.url + chunk)[0]
                                    for chunk in static_urls(body.decode(errors="replace"))]
                self._visits.visits.append(visit)
                self._stop.wait(self.pause)
        except BaseException as error:
            self._error = error

    def start(self) -> PageThenChunks:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def result(self) -> Visits:
        self._thread.join(self.seconds + 30)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(10)
            raise TimeoutError("the page-then-chunks client did not finish in time")
        if self._error is not None:
            raise self._error
        return self._visits

    def __enter__(self) -> PageThenChunks:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
