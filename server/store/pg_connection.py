"""PostgreSQL connections that never wait for an answer forever.

libpq has no client-side query timeout, and a server that stops answering
(frozen, partitioned, behind a proxy that black-holes traffic) never even
sees the query, so server-side limits cannot help. The layers, innermost
first:

* the server gives up first: `statement_timeout` and `lock_timeout` are sent
  as startup options, so slow work and lock waits end in an error
  (DatabaseBusy) on a connection that stays usable;
* `connect_timeout` bounds connecting; TCP keepalives and `tcp_user_timeout`
  let the kernel drop a socket whose peer vanished from the network;
* `BoundedConnection` gives up on any answer after the server's own limit
  plus ANSWER_SLACK: it closes the connection (SQLAlchemy sees a disconnect
  and refreshes the pool) and trips the breaker (`breaker.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.errors
from sqlalchemy import Engine, event

from convhub.server.store.breaker import DatabaseBreaker
from convhub.server.store.pg_doorbell import libpq_conninfo

# Beyond the server's own limit, how long an answer may take to arrive (it normally takes a millisecond).
ANSWER_SLACK = 0.5
# Keepalive probes on idle connections: the kernel drops a vanished peer after 10 + 3 * 5 s.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait for the server (query, commit, rollback) is bounded."""

    answer_timeout: float | None = None
    on_timeout: Callable[[str], None] | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        bound = self.answer_timeout if timeout is None else timeout
        try:
            return super().wait(gen, interval, bound)
        except psycopg.errors._WaitTimeout:  # documented by Connection.wait; an OperationalError
            if timeout is not None:  # psycopg's own bounded waits (cancellation) keep their meaning
                raise
            self.close()  # mid-protocol: unusable, and SQLAlchemy discards closed connections
            if self.on_timeout is not None:
                self.on_timeout(f"no answer within {bound:g} s")
            raise psycopg.OperationalError(f"the database did not answer within {bound:g} s") from None


def connect_args(
    *, connect_timeout: float, statement_timeout: float | None, lock_timeout: float, user_options: str | None
) -> dict[str, Any]:
    """libpq parameters bounding connects and statements (None: no statement limit); URL `options` are kept."""
    statement_ms = 0 if statement_timeout is None else _ms(statement_timeout)  # 0: PostgreSQL's "no limit"
    server_limits = f"-c statement_timeout={statement_ms} -c lock_timeout={_ms(lock_timeout)}"
    args: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(connect_timeout)),  # libpq counts whole seconds, at least 2
        "options": f"{user_options} {server_limits}" if user_options else server_limits,
        **KEEPALIVES,
    }
    if statement_timeout is not None:
        args["tcp_user_timeout"] = _ms(statement_timeout + ANSWER_SLACK)
    return args


def bound_connections(engine: Engine, *, answer_timeout: float | None, breaker: DatabaseBreaker | None) -> None:
    """`engine` opens BoundedConnections; a failed connect trips `breaker`, and none is tried while it is open."""

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> BoundedConnection:
        if breaker is not None:
            breaker.check()
        try:
            conn = BoundedConnection.connect(*cargs, **cparams)
        except psycopg.OperationalError:
            if breaker is not None:
                breaker.trip("connecting failed")
            raise
        conn.answer_timeout = answer_timeout
        conn.on_timeout = breaker.trip if breaker is not None else None
        return conn


def probe_database(url: str, *, connect_timeout: float, answer_timeout: float) -> None:
    """Connect afresh (no pool) and run `SELECT 1`; raises unless the database answers in time."""
    with BoundedConnection.connect(
        libpq_conninfo(url), connect_timeout=max(2, math.ceil(connect_timeout)), autocommit=True
    ) as conn:
        conn.answer_timeout = answer_timeout
        conn.execute("SELECT 1")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
