"""Run one start-up step in a forked child, so what it imports never lands in the serving process.

A schema upgrade needs alembic (and mako): ~18 MB resident once imported,
and Python gives little of it back after the upgrade is done. A fresh
database is upgraded on every first start (and every test server's), so the
server's idle RSS would carry alembic for life. Forked at start-up, before
any thread, connection or gRPC object exists, the child imports alembic,
upgrades, and exits; the parent only waits. An error in the child comes back
to the parent as the same exception (pickled), or as ForkedStepFailed when
it cannot be pickled.

Where fork is unavailable (Windows), the step runs in-process.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable


class ForkedStepFailed(RuntimeError):
    """The child failed with an exception that could not be sent back as itself (its text is kept)."""


def run_forked(step: Callable[[], None]) -> None:
    """Run `step` in a forked child and wait for it; raise what it raised."""
    if not hasattr(os, "fork"):
        step()
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns to the caller's code (os._exit skips the parent's cleanups)
        os.close(read_end)
        status = 0
        try:
            step()
        except BaseException as exc:
            status = 1
            _send(write_end, exc)
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if code == 0:
        return
    if report:
        raised = pickle.loads(report)
        if isinstance(raised, BaseException):
            raise raised
    raise ForkedStepFailed(f"the forked start-up step exited with status {code}")


def _send(fd: int, exc: BaseException) -> None:
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)  # some exceptions pickle but cannot be rebuilt
    except Exception:
        data = pickle.dumps(ForkedStepFailed(f"{type(exc).__name__}: {exc}"))
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(data)
