"""Test-only launcher: `convhub serve` plus a probe that reports the server's live tasks and subscriptions.

Run as `python tests/task_probe_serve.py serve ...`. On SIGUSR1 the process
writes `{"tasks": <asyncio tasks of its loop>, "subscriptions": <broadcaster
subscriptions alive>}` to the file named by CONVHUB_TEST_TASK_PROBE. This
lives in tests/, not in the service: production builds expose no such probe.
Leaked streams show up here (every RPC and every HTTP stream runs in a task,
every subscription is a `Subscription`); leaked threads, sockets and database
connections are measured from outside (/proc, pg_stat_activity).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from convhub.server.cli import main
from convhub.server.events.broadcaster import Subscription


def _report_tasks(_signum: int, _frame: FrameType | None) -> None:
    # Python runs signal handlers on the main thread, which is running the event loop.
    tasks = len(asyncio.all_tasks(asyncio.get_running_loop()))
    gc.collect()
    subscriptions = sum(isinstance(o, Subscription) for o in gc.get_objects())
    target = Path(os.environ["CONVHUB_TEST_TASK_PROBE"])
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"tasks": tasks, "subscriptions": subscriptions}))
    tmp.replace(target)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _report_tasks)
    sys.exit(main(sys.argv[1:]))
