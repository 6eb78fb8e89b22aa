"""The host's side of a fleet's ``logs --follow`` (``fleet.logfollow``): new lines of the app's logs on stdout
until stdin closes, and how a host's last lines are printed on the controller."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

from nextdeploy.core.config import parse_config
from nextdeploy.core.context import Context
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.logfollow import answer_lines, follow_until_stdin_closes
from nextdeploy.host.executor import LocalExecutor


def test_the_hosts_side_streams_new_lines_until_its_stdin_closes(tmp_path: Path) -> None:
    config = parse_config({"app": {"name": "shop", "source": str(tmp_path / "app")},
                           "server": {"root": str(tmp_path / "root")}}, tmp_path)
    ctx = Context(config, LocalExecutor(), Reporter(force_plain=True))
    out_log, error_log = ctx.paths.pm2_out_log("shop"), ctx.paths.pm2_error_log("shop")
    out_log.parent.mkdir(parents=True)
    out_log.write_text("old line\n")
    read_end, write_end = os.pipe()
    out = io.StringIO()
    stdin = os.fdopen(read_end, "rb")
    following = threading.Thread(target=follow_until_stdin_closes, args=(ctx, out, stdin), daemon=True)
    following.start()
    try:
        deadline = time.monotonic() + 10
        while "out | new line" not in out.getvalue() or "err | went wrong" not in out.getvalue():
            assert time.monotonic() < deadline, out.getvalue()
            for log, line in ((out_log, "new line\n"), (error_log, "went wrong\n")):
                with log.open("a") as file:
                    file.write(line)
            time.sleep(0.3)
        assert following.is_alive()  # stdin still open: it goes on
    finally:
        os.close(write_end)  # the controller's session ended
    following.join(5)
    assert not following.is_alive()
    stdin.close()
    lines = out.getvalue().splitlines()
    assert "old line" not in out.getvalue() and "out | new line" in lines and "err | went wrong" in lines


def test_a_hosts_last_lines_and_its_errors_each_name_the_host() -> None:
    answer = {"reachable": True, "streams": [{"path": "/srv/app/logs/pm2-shop.out.log", "lines": ["a", "b"]}],
              "not_running": "PM2 runs no worker of shop"}
    assert answer_lines("web1", answer) == [
        "web1 | ==> /srv/app/logs/pm2-shop.out.log (last 2 lines) <==", "web1 | a", "web1 | b",
        "web1 | PM2 runs no worker of shop: nothing writes these logs now"]
    assert answer_lines("web2", {"reachable": False, "error": "cannot reach web2"}) == [
        "web2 | unreachable: cannot reach web2"]
