"""The launcher (src/nextdeploy/launcher/launcher.cjs) with real node, real pm2 and a real `next build`.

One module-scoped build of examples/hello (plus three test-only routes added to the temp copy); each test then
assembles its own releases, its own PM2_HOME and port, and kills everything it started, even on failure.

Exit code of the launcher after a completed drain: 0 (whatever signal asked for it; Next alone exits 130/143).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp")

import contextlib

from nextdeploy.demo.loadgen import BackgroundLoad, LoadResult
from nextdeploy.host.probe import listen_port

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "node_modules" / ".bin"
EXAMPLE = REPO / "examples" / "hello"
LAUNCHER = REPO / "src" / "nextdeploy" / "launcher" / "launcher.cjs"
APP_NAME = "hello"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("node") is None or not (TOOLS_BIN / "pm2").exists() or not (TOOLS_BIN / "pnpm").exists(),
        reason="needs node, and pnpm + pm2 under .tools/node_modules/.bin",
    ),
]

# Test-only routes, added to the temp copy of the example before the build.
EXTRA_ROUTES = {
    # A request that is still in flight when the drain starts.
    "app/api/slow/route.js": """
export const dynamic = "force-dynamic";
export async function GET(request) {
  const ms = Number(new URL(request.url).searchParams.get("ms") || "1000");
  await new Promise((resolve) => setTimeout(resolve, ms));
  return Response.json({ slept: ms });
}
""",
    # after() work that is still pending at shutdown: Next's own cleanup must flush it.
    "app/api/after/route.js": """
import { after } from "next/server";
import { writeFileSync } from "node:fs";
export const dynamic = "force-dynamic";
export async function GET(request) {
  const params = new URL(request.url).searchParams;
  const ms = Number(params.get("ms") || "1000");
  const file = params.get("file");
  after(async () => {
    await new Promise((resolve) => setTimeout(resolve, ms));
    writeFileSync(file, "flushed");
  });
  return Response.json({ scheduled: ms });
}
""",
    # A health route that never becomes healthy.
    "app/api/fail/route.js": """
export const dynamic = "force-dynamic";
export async function GET() {
  return new Response("broken", { status: 500 });
}
""",
}


def tool_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{TOOLS_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NEXT_TELEMETRY_DISABLED"] = "1"
    env.pop("HOSTNAME", None)  # Next binds to $HOSTNAME; never inherit a machine name
    env.update(extra)
    return env




def run(
    cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# ---------------------------------------------------------------------------------------------- build + releases


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    app = tmp_path_factory.mktemp("build") / "hello"
    shutil.copytree(EXAMPLE, app, symlinks=True, ignore=shutil.ignore_patterns("node_modules", ".next"))
    for rel, text in EXTRA_ROUTES.items():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_text(text)
    env = tool_env()
    run(["pnpm", "install", "--frozen-lockfile"], cwd=app, env=env, timeout=300)
    run(["pnpm", "build"], cwd=app, env=env, timeout=300)
    assert (app / ".next" / "standalone" / "server.js").is_file()
    return app


def make_release(build: Path, root: Path, release_id: str) -> Path:
    """Assemble <root>/releases/<id> by hand, the way the deploy tool does for a flat app."""
    release = root / "releases" / release_id
    shutil.copytree(build / ".next" / "standalone", release, symlinks=True)
    shutil.copytree(build / ".next" / "static", release / ".next" / "static", symlinks=True)
    if (build / "public").is_dir():
        shutil.copytree(build / "public", release / "public", symlinks=True)
    meta = release / ".nextdeploy"
    meta.mkdir()
    shutil.copy2(LAUNCHER, meta / "launcher.cjs")
    (meta / "manifest.json").write_text(json.dumps({"id": release_id, "server": "server.js"}))
    return release


def switch_current(root: Path, release_id: str) -> None:
    """Atomic switch: a temp symlink renamed over `current`."""
    tmp = root / "current.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(Path("releases") / release_id)
    os.replace(tmp, root / "current")


def get(port: int, path: str = "/api/health", timeout: float = 5) -> tuple[int, str | None, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("x-nextdeploy-release"), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("x-nextdeploy-release"), err.read()


def wait_serving(port: int, release: str | None, timeout: float = 30) -> None:
    """Until 10 answers in a row come from `release` (None: any release)."""
    deadline = time.monotonic() + timeout
    streak = 0
    last: Any = None
    while time.monotonic() < deadline:
        try:
            status, rel, _ = get(port, timeout=2)
            last = (status, rel)
            ok = status == 200 and (release is None or rel == release)
        except OSError as err:
            last, ok = err, False
        streak = streak + 1 if ok else 0
        if streak >= 10:
            return
        time.sleep(0.05 if ok else 0.2)
    raise AssertionError(f"port {port} not serving release {release} after {timeout}s (last: {last})")


# ---------------------------------------------------------------------------------------------- pm2


@dataclass
class Pm2App:
    root: Path
    home: Path
    port: int
    env: dict[str, str]
    reloads: list[dict[str, Any]] = field(default_factory=list)

    def pm2(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run(["pm2", *args], cwd=self.root, env=self.env, timeout=timeout)

    def jlist(self) -> list[dict[str, Any]]:
        self.pm2("ping")  # `jlist` may print daemon-spawn lines before the JSON
        out = self.pm2("jlist").stdout
        data: list[dict[str, Any]] = json.loads(out[out.index("[") :])
        return data

    def wait_online(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            procs = self.jlist()
            if sum(1 for p in procs if p["pm2_env"]["status"] == "online") == count:
                return
            time.sleep(0.3)
        raise AssertionError(f"pm2 never had {count} online workers:\n{self.logs()}")

    def reload_to(self, release_id: str) -> dict[str, Any]:
        switch_current(self.root, release_id)
        t0 = time.monotonic()
        self.pm2("reload", APP_NAME, timeout=120)
        entry = {"to": release_id, "t_start": t0, "t_end": time.monotonic()}
        entry["duration"] = entry["t_end"] - t0
        self.reloads.append(entry)
        return entry

    def logs(self) -> str:
        chunks = []
        for f in [*sorted((self.home / "logs").glob("*.log")), self.home / "pm2.log"]:
            if f.exists():
                chunks.append(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}")
        return "\n".join(chunks)


def write_ecosystem(root: Path, port: int, *, script: str, wait_ready: bool = True) -> Path:
    app = {
        "name": APP_NAME,
        "script": str(root / "current" / script),
        "cwd": str(root / "current"),
        "exec_mode": "cluster",
        "instances": 2,
        "wait_ready": wait_ready,
        "listen_timeout": 15000,
        "kill_timeout": 10000,
        "time": True,  # timestamps in the pm2 logs, to read a failure
        "env": {"PORT": str(port), "HOSTNAME": "127.0.0.1", "NODE_ENV": "production"},
    }
    path = root / "ecosystem.config.cjs"
    path.write_text(f"module.exports = {{ apps: [{json.dumps(app, indent=2)}] }};\n")
    return path


def start_pm2_app(
    build: Path, root: Path, *, script: str = ".nextdeploy/launcher.cjs", wait_ready: bool = True
) -> Iterator[Pm2App]:
    """Releases A and B, current -> A, PM2 (own PM2_HOME) running 2 cluster workers; pm2 kill at the end."""
    for rid in ("A", "B"):
        make_release(build, root, rid)
    switch_current(root, "A")
    port = listen_port()
    eco = write_ecosystem(root, port, script=script, wait_ready=wait_ready)
    # Short path: the daemon's unix sockets live in PM2_HOME (108-byte limit).
    home = Path(tempfile.mkdtemp(prefix="nd-pm2-"))
    (home / "touch").write_text("0")  # skips the first-run banner and its version check
    env = tool_env(PM2_HOME=str(home), PM2_DISABLE_VERSION_CHECK="1")
    app = Pm2App(root=root, home=home, port=port, env=env)
    pids: set[int] = set()
    try:
        app.pm2("start", str(eco))
        app.wait_online(2)
        pids.update(int(p["pid"]) for p in app.jlist() if p.get("pid"))
        wait_serving(port, "A" if script.startswith(".nextdeploy") else None)
        yield app
    finally:
        with contextlib.suppress(Exception):
            pids.update(int(p["pid"]) for p in app.jlist() if p.get("pid"))
        daemon_pid = home / "pm2.pid"
        if daemon_pid.exists():
            pids.add(int(daemon_pid.read_text().strip() or 0))
        subprocess.run(["pm2", "kill"], env=env, capture_output=True, timeout=60)
        # Only survivors of `pm2 kill`: our own daemon and workers.
        for pid in pids - {0}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def pm2_app(build_dir: Path, tmp_path: Path) -> Iterator[Pm2App]:
    yield from start_pm2_app(build_dir, tmp_path)


def reload_under_load(
    app: Pm2App,
    *,
    mode: str,
    rate: float = 200,
    connections: int = 16,
    duration: float = 40,
    first_at: float = 1.5,
    settle: float = 2.0,
) -> LoadResult:
    """Load the app, reload A->B then B->A, stop the load `settle` s after the last reload.

    Two reloads take 9-15 s on 2 cores, so the load usually runs ~12-17 s; `duration` is only the hard cap.
    """
    url = f"http://127.0.0.1:{app.port}/api/health"
    with BackgroundLoad(url, rate=rate, duration=duration, mode=mode, connections=connections) as load:
        time.sleep(first_at)
        app.reload_to("B")
        time.sleep(1.0)
        app.reload_to("A")
        time.sleep(settle)
        load.stop()
    return load.result()


def report(app: Pm2App, result: LoadResult) -> list[dict[str, Any]]:
    """Per reload: duration and the failures of requests started during it (or within 1 s after)."""
    rows = []
    for r in app.reloads:
        lo, hi = r["t_start"] - result.t0_monotonic, r["t_end"] - result.t0_monotonic
        fails = [f for f in result.failures() if lo - 0.5 <= f.start < hi + 1.0]
        rows.append(
            {
                "to": r["to"],
                "reload_s": round(r["duration"], 2),
                "failed": len(fails),
                "window": (round(lo, 2), round(hi, 2)),
                "p99_ms": _ms(result.percentiles((lo, hi)).p99),
            }
        )
    print(
        f"\n[{result.mode}] total={result.total} failed={result.failed} errors={dict(result.errors())} "
        f"releases={dict(result.releases_seen())} reloads={rows}"
    )
    return rows


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def assert_zero_loss_and_switch(app: Pm2App, result: LoadResult) -> None:
    report(app, result)
    assert result.failed == 0, (
        f"{result.failed} failed: {dict(result.errors())}; first: {result.failures()[:5]}\n{app.logs()}"
    )
    assert result.total > 1000
    (r1, r2) = app.reloads
    t0 = result.t0_monotonic
    after_first = result.releases_seen(window=(r1["t_end"] - t0, r2["t_start"] - t0))
    after_second = result.releases_seen(window=(r2["t_end"] - t0, 1e9))
    assert set(after_first) == {"B"} and after_first["B"] > 50, after_first
    assert set(after_second) == {"A"} and after_second["A"] > 50, after_second


# ---------------------------------------------------------------------------------------------- tests


def test_reload_under_keepalive_load_loses_nothing(pm2_app: Pm2App) -> None:
    result = reload_under_load(pm2_app, mode="keepalive")
    assert_zero_loss_and_switch(pm2_app, result)


def test_reload_under_new_connection_load_loses_nothing(pm2_app: Pm2App) -> None:
    result = reload_under_load(pm2_app, mode="new-connection")
    assert_zero_loss_and_switch(pm2_app, result)


@dataclass
class Direct:
    proc: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def spawn_launcher(release: Path, tmp: Path, **env: str) -> Direct:
    port = listen_port()
    out, err = tmp / f"launcher-{port}.out", tmp / f"launcher-{port}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(
            ["node", str(release / ".nextdeploy" / "launcher.cjs")],
            cwd=tmp,
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            env=tool_env(PORT=str(port), HOSTNAME="127.0.0.1", **env),
            start_new_session=True,  # its own process group, killed as a whole at the end
        )
    return Direct(proc, port, out, err)


@pytest.fixture
def direct_launchers() -> Iterator[list[Direct]]:
    started: list[Direct] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(d.proc.pid, signal.SIGKILL)
            d.proc.wait(10)


def test_direct_run_serves_and_drains_on_sigint(
    build_dir: Path, tmp_path: Path, direct_launchers: list[Direct]
) -> None:
    release = make_release(build_dir, tmp_path, "R1")
    d = spawn_launcher(release, tmp_path)
    direct_launchers.append(d)
    wait_serving(d.port, "R1", timeout=20)
    assert "ready in" in d.stdout.read_text()

    # A keep-alive connection that keeps sending, one that stays idle, a slow request in flight,
    # and after() work that is still pending when the drain starts.
    busy = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    busy.request("GET", "/api/health")
    resp = busy.getresponse()
    assert resp.status == 200 and resp.getheader("x-nextdeploy-release") == "R1"
    assert resp.getheader("connection", "").lower() == "keep-alive"
    resp.read()
    idle = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    idle.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in idle.recv(65536)

    slow_result: dict[str, Any] = {}

    def slow() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        conn.request("GET", "/api/slow?ms=1500")
        r = conn.getresponse()
        slow_result.update(
            status=r.status,
            release=r.getheader("x-nextdeploy-release"),
            connection=r.getheader("connection"),
            body=r.read(),
        )
        conn.close()

    slow_thread = threading.Thread(target=slow)
    slow_thread.start()
    mark = tmp_path / "after-flushed"
    # after() outlives the drain (~1.3 s): only Next's own cleanup, run after ours, waits for it.
    status, _, _ = get(d.port, f"/api/after?ms=2500&file={urllib.parse.quote(str(mark))}")
    assert status == 200
    time.sleep(0.3)  # the slow request is now in flight

    t_sigint = time.monotonic()
    d.proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    # The busy connection's next request is still answered, with `Connection: close`.
    busy.request("GET", "/api/health")
    resp = busy.getresponse()
    assert resp.status == 200 and resp.getheader("x-nextdeploy-release") == "R1"
    assert resp.getheader("connection", "").lower() == "close"
    resp.read()
    busy.close()
    # No new connections once draining (net-level close); outside PM2 nobody else takes them.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", d.port), timeout=2).close()

    slow_thread.join(10)
    assert slow_result.get("status") == 200, slow_result
    assert slow_result["release"] == "R1"
    assert (slow_result["connection"] or "").lower() == "close"

    code = d.proc.wait(timeout=9)  # the drain deadline is 8 s
    elapsed = time.monotonic() - t_sigint
    # The idle socket was closed by the server (~1 s idle), it did not hold the drain to the deadline.
    idle.settimeout(3)
    while idle.recv(65536):  # the rest of the first response, then EOF
        pass
    idle.close()
    print(f"\n[direct] exit code {code} {elapsed:.2f}s after SIGINT")
    assert code == 0, d.output()
    assert 1.0 <= elapsed < 4.0, d.output()
    assert mark.read_text() == "flushed", "Next's cleanup (after() flush) did not run before exit"
    out = d.output()
    assert "SIGINT: draining" in out and "drained in" in out


def test_keepalive_responses_are_not_held_back_by_nagle(
    build_dir: Path, tmp_path: Path, direct_launchers: list[Direct]
) -> None:
    """The public listener sets TCP_NODELAY, as Node's own http server does.

    Without it every keep-alive request after a connection's first waits for the client's delayed ACK
    (Linux: at least 40 ms) before the end of its response leaves (docs/bench/HISTORY.md).
    Not a speed target: a mechanism with a 40 ms floor, so the median of a few requests tells it apart.
    """
    release = make_release(build_dir, tmp_path, "R1")
    d = spawn_launcher(release, tmp_path)
    direct_launchers.append(d)
    wait_serving(d.port, "R1", timeout=20)
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    seconds = []
    for _ in range(16):
        started = time.monotonic()
        conn.request("GET", "/api/health")
        resp = conn.getresponse()
        resp.read()
        seconds.append(time.monotonic() - started)
        assert resp.status == 200 and resp.getheader("connection", "").lower() == "keep-alive"
    conn.close()
    later = sorted(seconds[1:])  # the first request of a connection is quick-ACKed either way
    median_ms = later[len(later) // 2] * 1000
    print(f"\n[nodelay] keep-alive request median {median_ms:.1f} ms")
    assert median_ms < 40, [round(s * 1000, 1) for s in seconds]


def test_ipc_ready_message_and_shutdown_message(
    build_dir: Path, tmp_path: Path, direct_launchers: list[Direct]
) -> None:
    """What PM2 relies on: 'ready' over IPC only once the worker serves; the 'shutdown' message drains it."""
    release = make_release(build_dir, tmp_path, "IPC")
    ours, theirs = socket.socketpair()
    port = listen_port()
    out, err = tmp_path / "ipc.out", tmp_path / "ipc.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(
            ["node", str(release / ".nextdeploy" / "launcher.cjs")],
            cwd=tmp_path,
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            pass_fds=[theirs.fileno()],
            # Node's IPC channel, as a parent like PM2 sets it up: newline-delimited JSON on an fd.
            env=tool_env(
                PORT=str(port),
                HOSTNAME="127.0.0.1",
                NODE_CHANNEL_FD=str(theirs.fileno()),
                NODE_CHANNEL_SERIALIZATION_MODE="json",
            ),
            start_new_session=True,
        )
    theirs.close()
    direct_launchers.append(Direct(proc, port, out, err))
    ours.settimeout(20)
    buf = b""
    while b'"ready"\n' not in buf:
        chunk = ours.recv(4096)
        assert chunk, f"IPC closed before 'ready': {out.read_text()} {err.read_text()}"
        buf += chunk
    # Ready means ready: the very first request through the public port is answered by this release.
    status, rel, _ = get(port, timeout=5)
    assert (status, rel) == (200, "IPC")
    t0 = time.monotonic()
    ours.sendall(b'"shutdown"\n')
    code = proc.wait(timeout=9)
    ours.close()
    assert code == 0
    assert 0.3 <= time.monotonic() - t0 < 4.0  # at least the launcher's MIN_DRAIN_MS
    assert "shutdown: draining" in out.read_text()


def test_boot_crash_exits_nonzero_promptly(build_dir: Path, tmp_path: Path, direct_launchers: list[Direct]) -> None:
    release = make_release(build_dir, tmp_path, "BROKEN")
    (release / "server.js").write_text('throw new Error("boom at require time");\n')
    d = spawn_launcher(release, tmp_path)
    direct_launchers.append(d)
    t0 = time.monotonic()
    code = d.proc.wait(timeout=10)
    assert code != 0
    assert time.monotonic() - t0 < 5
    assert "boom at require time" in d.stderr.read_text()


def test_unhealthy_ready_path_exits_at_ready_timeout(
    build_dir: Path, tmp_path: Path, direct_launchers: list[Direct]
) -> None:
    release = make_release(build_dir, tmp_path, "SICK")
    d = spawn_launcher(release, tmp_path, NEXTDEPLOY_READY_PATH="/api/fail", NEXTDEPLOY_READY_TIMEOUT_MS="2500")
    direct_launchers.append(d)
    t0 = time.monotonic()
    code = d.proc.wait(timeout=15)
    elapsed = time.monotonic() - t0
    assert code == 1
    assert 2.0 <= elapsed < 6, elapsed
    err = d.stderr.read_text()
    assert "not ready" in err and "answered 500" in err, err


def test_warm_routes_are_requested_before_the_public_port_opens(
    build_dir: Path, tmp_path: Path, direct_launchers: list[Direct]
) -> None:
    """[health] smoke routes are requested once before traffic: their first request loads their code, which
    would stall the worker's first users. What they answer does not hold the worker back."""
    release = make_release(build_dir, tmp_path, "WARM")
    d = spawn_launcher(release, tmp_path, NEXTDEPLOY_READY_PATH="/api/health",
                       NEXTDEPLOY_WARM_PATHS="/\n/api/slow?ms=2000\n/api/fail\n/no-such-page")
    direct_launchers.append(d)
    t0 = time.monotonic()
    while True:
        assert d.proc.poll() is None and time.monotonic() - t0 < 30, d.output()
        try:
            socket.create_connection(("127.0.0.1", d.port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.02)
    # The slow warm route alone takes 2 s, after the ready path answered: the port opened after it.
    assert time.monotonic() - t0 >= 2.0
    wait_serving(d.port, "WARM", timeout=10)
    ready = next(line for line in d.stdout.read_text().splitlines() if "ready in" in line)
    assert "(GET /api/health -> 200; warmed / 200 in " in ready, ready
    assert "/api/slow?ms=2000 200 in 2" in ready and "/api/fail 500 in " in ready, ready
    assert "/no-such-page 404 in " in ready, ready


def test_warming_up_never_outlasts_the_ready_deadline(
    build_dir: Path, tmp_path: Path, direct_launchers: list[Direct]
) -> None:
    """PM2 stops the old worker at listen_timeout whether or not the new one is ready: a warm route that
    hangs is given up at the ready deadline, and the worker opens its port."""
    release = make_release(build_dir, tmp_path, "HANG")
    d = spawn_launcher(release, tmp_path, NEXTDEPLOY_READY_PATH="/api/health", NEXTDEPLOY_READY_TIMEOUT_MS="4000",
                       NEXTDEPLOY_WARM_PATHS="/api/slow?ms=30000\n/")
    direct_launchers.append(d)
    t0 = time.monotonic()
    wait_serving(d.port, "HANG", timeout=15)
    assert time.monotonic() - t0 < 8
    ready = next(line for line in d.stdout.read_text().splitlines() if "ready in" in line)
    assert "/api/slow?ms=30000 failed: probe timed out in " in ready and "/ skipped (ready deadline)" in ready, ready


def test_a_release_that_holds_stays_off_its_port_until_approved(
    build_dir: Path, tmp_path: Path, direct_launchers: list[Direct]
) -> None:
    """Manifest "hold": the worker answers on its private port (written to held/<pid>) and opens its port only
    once the `approved` file exists; NEXTDEPLOY_HOLD=0 (the preflight) or an approved release: no hold."""
    release = make_release(build_dir, tmp_path, "HELD")
    manifest = release / ".nextdeploy" / "manifest.json"
    manifest.write_text(json.dumps({"id": "HELD", "server": "server.js", "hold": True}))
    d = spawn_launcher(release, tmp_path)
    direct_launchers.append(d)
    held_file = release / ".nextdeploy" / "held" / str(d.proc.pid)
    deadline = time.monotonic() + 30
    while not held_file.exists():
        assert d.proc.poll() is None and time.monotonic() < deadline, d.output()
        time.sleep(0.05)
    private_port = int(held_file.read_text())
    status, answered_by, _ = get(private_port, "/api/health")
    assert status == 200 and answered_by == "HELD"
    time.sleep(0.5)  # still held: nothing listens on its port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", d.port), timeout=2).close()
    assert "held off port" in d.stdout.read_text()

    (release / ".nextdeploy" / "approved").write_text("approved\n")
    wait_serving(d.port, "HELD", timeout=5)
    assert not held_file.exists()
    assert "ready in" in d.stdout.read_text()

    # Approved (and the preflight's NEXTDEPLOY_HOLD=0 without approval): serves at once, writes no held file.
    (release / ".nextdeploy" / "approved").unlink()
    preflight = spawn_launcher(release, tmp_path, NEXTDEPLOY_HOLD="0")
    direct_launchers.append(preflight)
    wait_serving(preflight.port, "HELD", timeout=30)
    assert not (release / ".nextdeploy" / "held" / str(preflight.proc.pid)).exists()
