"""Background work in a child process: `serve` runs the webhook emitter as `convhub webhook-worker`.

Python runs one thread of the API's process at a time (the GIL), and on a
busy API that one core is the limit: fan-out, signing and posting webhooks
in the same process took a third of ingest's rate (bench/webhooks_bench.py
(c)). In a process of its own the emitter runs on another core, and the API
keeps its own. Both share the database, which is the queue: deliveries are
rows, claimed with leases, so the split changes no guarantee.

The parent (`WorkerProcess`, a Worker of its supervisor):
* starts the child after the schema is up to date, and starts it again
  (after a growing pause) if it ever exits on its own;
* on SQLite, where there is no NOTIFY, forwards its doorbell through a pipe
  (store/doorbell.py `PipeDoorbell`), so the child hears of new events at
  once; on PostgreSQL the child LISTENs like any replica;
* on stop, sends SIGTERM and waits: the child lets attempts in flight
  finish, records them and gives back its leases, as the emitter does inline.

The child dies with its parent (Linux `PR_SET_PDEATHSIG`): a `serve` killed
with SIGKILL leaves no worker behind, and its leases run out as after any crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys

from convhub.server.store.doorbell import Doorbell

log = logging.getLogger("convhub.workers")

RESTART_MIN = 1.0  # seconds before starting a child that exited on its own again, doubling ...
RESTART_MAX = 30.0  # ... up to this
_PR_SET_PDEATHSIG = 1


class WorkerProcess:
    """A `Worker` (server/workers.py) that keeps `convhub <command>` running as a child process."""

    def __init__(
        self,
        name: str,
        command: list[str],
        database_url: str,
        doorbell: Doorbell | None,
        *,
        stop_timeout: float,
    ) -> None:
        self.name = name
        self._command = command
        self._database_url = database_url
        self._doorbell = doorbell  # forwarded through a pipe (SQLite); None: the child hears NOTIFY
        self._stop_timeout = stop_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.create_task(self._keep_running(), name=f"{self.name}-watch")

    async def _spawn(self) -> None:
        args = [sys.executable, "-m", "convhub.server.cli", *self._command, "--parent-pid", str(os.getpid())]
        pass_fds: tuple[int, ...] = ()
        read_end = write_end = None
        if self._doorbell is not None:
            read_end, write_end = os.pipe()
            os.set_blocking(write_end, False)
            args += ["--doorbell-fd", str(read_end)]
            pass_fds = (read_end,)
        # PGAPPNAME: its PostgreSQL connections show as this in pg_stat_activity.
        env = {**os.environ, "CONVHUB_DATABASE_URL": self._database_url, "PGAPPNAME": f"convhub-{self._command[0]}"}
        try:
            self._proc = await asyncio.create_subprocess_exec(*args, pass_fds=pass_fds, env=env)
        except BaseException:
            if write_end is not None:
                os.close(write_end)
            raise
        finally:
            if read_end is not None:
                os.close(read_end)  # the child's now
        if self._doorbell is not None:
            self._doorbell.forward_to(write_end)  # the doorbell owns (and closes) it from now on
        log.info("%s: started process %d", self.name, self._proc.pid)

    def _stop_forwarding(self) -> None:
        if self._doorbell is not None:
            self._doorbell.forward_to(None)

    async def _keep_running(self) -> None:
        """Wait for the child to exit, then start it again after a pause; a start that fails is retried alike.

        Only the first start (`start`) fails `serve`: a later one that cannot
        start (no fds, no memory, the interpreter replaced by an upgrade) must
        not leave `serve` running without webhooks for the rest of its life.
        """
        loop = asyncio.get_running_loop()
        pause = RESTART_MIN
        while True:
            if self._proc is not None:
                started = loop.time()
                code = await self._proc.wait()
                self._stop_forwarding()
                if self._stopping:
                    return
                if loop.time() - started > RESTART_MAX:  # it had been running well: not a crash loop
                    pause = RESTART_MIN
                log.warning(
                    "%s: process %d exited (%s); starting it again in %.0f s", self.name, self._proc.pid, code, pause
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_MAX)
            if self._stopping:
                return
            try:
                await self._spawn()
            except OSError as exc:
                self._proc = None
                log.warning("%s: could not start its process (%s); trying again in %.0f s", self.name, exc, pause)

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self._stop_timeout)
            except TimeoutError:
                log.warning("%s: process %d did not stop in time; killing it", self.name, proc.pid)
                proc.kill()
                await proc.wait()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        self._stop_forwarding()


def die_with_parent(parent_pid: int) -> None:
    """In the child: be killed when the parent dies (Linux); exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # died before prctl took effect
        sys.exit(0)
