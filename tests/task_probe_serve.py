"""Test-only launcher: `convhub serve` plus a probe that reports the server's live asyncio tasks.

Run as `python tests/task_probe_serve.py serve ...`. On SIGUSR1 the process
writes the number of asyncio tasks of its event loop to the file named by
CONVHUB_TEST_TASK_PROBE. This lives in tests/, not in the service: production
builds expose no such probe. Leaked streams show up here (every RPC and every
HTTP stream runs in a task); leaked threads, sockets and database connections
are measured from outside (/proc, pg_stat_activity).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from convhub.server.cli import main


def _report_tasks(_signum: int, _frame: FrameType | None) -> None:
    # Python runs signal handlers on the main thread, which is running the event loop.
    count = len(asyncio.all_tasks(asyncio.get_running_loop()))
    target = Path(os.environ["CONVHUB_TEST_TASK_PROBE"])
    tmp = target.with_suffix(".tmp")
    tmp.write_text(str(count))
    tmp.replace(target)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _report_tasks)
    sys.exit(main(sys.argv[1:]))
