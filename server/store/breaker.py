"""The circuit breaker: once the database stops answering, calls stop waiting for it.

Reads run inline on the event loop (the fastest path, measured), so the loop
must never wait on a database that does not answer. Every wait for an answer
is bounded (`pg_connection.BoundedConnection`), and the first wait that runs
out, or the first connect that fails, trips this breaker: from then on
`check()` fails at once with DatabaseUnavailable (UNAVAILABLE to the caller)
without touching the database, so the loop stalls at most once per outage,
for one bounded wait. A probe thread tries a fresh connection every
`interval`; when one answers, the pools are emptied (their connections may
be dead) and calls go through again. No restart needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from convhub.server.store.faults import DatabaseUnavailable

log = logging.getLogger("convhub.database")

PROBE_INTERVAL = 1.0


class DatabaseBreaker:
    """Open while the database is known not to answer; `generation` counts trips."""

    def __init__(
        self,
        probe: Callable[[], None] = lambda: None,
        on_recover: Callable[[], None] = lambda: None,
        *,
        interval: float = PROBE_INTERVAL,
    ) -> None:
        self._probe = probe
        self._on_recover = on_recover
        self._interval = interval
        self._open = False
        self._why = ""
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.generation = 0  # connections kept across a trip are replaced (Database.read)

    @property
    def is_open(self) -> bool:
        return self._open

    def check(self) -> None:
        """Raise DatabaseUnavailable while tripped; costs one attribute read otherwise."""
        if self._open:
            raise DatabaseUnavailable(f"the database is not answering ({self._why}); retry later")

    def trip(self, why: str) -> None:
        with self._lock:
            if self._open or self._stopped.is_set():
                return
            self._open = True
            self._why = why
            self.generation += 1
        log.warning("database not answering (%s): calls answer UNAVAILABLE until a probe gets an answer", why)
        threading.Thread(target=self._probe_until_answered, name="convhub-db-probe", daemon=True).start()

    def stop(self) -> None:
        """No more probes (the process is closing its database)."""
        self._stopped.set()

    def _probe_until_answered(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._probe()
            except Exception as exc:
                log.debug("database probe failed: %s", type(exc).__name__)
                continue
            self._on_recover()
            with self._lock:
                self._open = False
            log.warning("database answering again: calls go through")
            return
