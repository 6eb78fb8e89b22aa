"""A fake PM2 for unit tests of the held cut-over and the recovery: no node, no PM2, no sockets, no waiting.

``FakeHost`` holds it together, for one deploy root in a temporary directory:

- ``FakeClock``: ``time.monotonic`` and ``time.sleep`` while installed (``FakeHost.installed()``). A sleep
  moves the clock and lets PM2 and the workers act (``FakeDaemon.advance``): a window of seconds runs in
  milliseconds. It can also raise an interrupt, or kill the run (``Killed``), at a chosen moment.
- ``FakeDaemon``: PM2's process list (ids, pids, status, restart counts, env, start times) and what PM2 and
  the launcher do with it: spawn (duplicate), delete (the old workers drain), reload, restart a worker
  that exited (from ``current``, as PM2 does), the hold (``held/<pid>`` with the private port until the
  release's ``approved`` file appears), and each release's scripted ``Behaviour``.
- ``FakePm2``: the client (``nextdeploy.pm2.client.Pm2``) reading that list.
- ``FakeExecutor``: file ops on the disk as ``LocalExecutor`` does them; PM2 ops and pm2 commands on the
  daemon; any other command is refused (a unit test runs none).
- ``http.client.HTTPConnection`` while installed: the workers answer on their private ports, and the
  serving ones on the public port in turn, with the launcher's release header.
"""

from nextdeploy.pm2.fake.daemon import Behaviour, FakeClock, FakeDaemon, FakeProcess, Killed
from nextdeploy.pm2.fake.host import FakeExecutor, FakeHost, FakePm2

__all__ = ["Behaviour", "FakeClock", "FakeDaemon", "FakeExecutor", "FakeHost", "FakePm2", "FakeProcess", "Killed"]
