"""Reading and pruning the event log (the `events` table the outbox writes).

Every read is keyed by (customer_id, sequence), the primary key, so it is an
index range scan whatever the log's size; a conversation filter uses
`ix_events_conversation`. Sequences are gap-free and in commit order per
customer (see events/outbox.py), which is what lets a reader that resumes
after N trust that nothing below the next row it sees is still to come.

Pruning keeps that true: it deletes a *prefix* of each customer's log (the
lowest sequences first), never a row in the middle, so the oldest kept
sequence is a clean boundary readers can be told about (OUT_OF_RANGE).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    Select,
    String,
    and_,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    true,
)

from convhub.server.store.models import Customer, Event, table

_events = table(Event)
_customers = table(Customer)

# What readers need of a row: the broadcaster filters on type and conversation before decoding the payload.
_COLUMNS = (_events.c.customer_id, _events.c.sequence, _events.c.type, _events.c.conversation_id, _events.c.payload)

# SQLite gets one OR term per customer; at most this many per statement (two bind parameters each).
_SQLITE_FEEDS_PER_STATEMENT = 200


@dataclass(frozen=True)
class LogBounds:
    """A customer's log as it is now: `oldest` is the lowest sequence still kept (newest + 1 when none is)."""

    oldest: int
    newest: int


_bounds = select(
    select(func.min(_events.c.sequence)).where(_events.c.customer_id == bindparam("customer_id")).scalar_subquery(),
    _customers.c.event_seq,
).where(_customers.c.id == bindparam("customer_id"))


def log_bounds(conn: Connection, customer_id: str) -> LogBounds:
    """Two primary-key probes. `newest` is the counter: every sequence up to it has committed."""
    row = conn.execute(_bounds, {"customer_id": customer_id}).first()
    if row is None:  # no such customer: an empty log
        return LogBounds(1, 0)
    oldest, newest = row
    return LogBounds(newest + 1 if oldest is None else oldest, newest)


@functools.cache
def _page_statement(by_type: bool, by_conversation: bool) -> Select[Any]:
    query = select(*_COLUMNS).where(
        _events.c.customer_id == bindparam("customer_id"), _events.c.sequence > bindparam("after")
    )
    if by_type:
        query = query.where(_events.c.type.in_(bindparam("types", expanding=True)))
    if by_conversation:
        query = query.where(_events.c.conversation_id == bindparam("conversation_id"))
    return query.order_by(_events.c.sequence).limit(bindparam("limit"))


def read_page(
    conn: Connection,
    customer_id: str,
    after: int,
    *,
    types: Collection[str] | None,
    conversation_id: str | None,
    limit: int,
) -> list[Any]:
    """Up to `limit` events of one customer with sequence > `after`, in order, matching the filters."""
    params: dict[str, Any] = {"customer_id": customer_id, "after": after, "limit": limit}
    if types is not None:
        params["types"] = list(types)
    if conversation_id is not None:
        params["conversation_id"] = conversation_id
    return list(conn.execute(_page_statement(types is not None, conversation_id is not None), params))


def _postgresql_feeds() -> Select[Any]:
    cursors = (
        func.unnest(cast(bindparam("customer_ids"), ARRAY(String)), cast(bindparam("cursors"), ARRAY(BigInteger)))
        .table_valued("customer_id", "cursor")
        .render_derived(name="k", with_types=False)
    )
    after_cursor = (
        select(*_COLUMNS)
        .where(_events.c.customer_id == cursors.c.customer_id, _events.c.sequence > cursors.c.cursor)
        .order_by(_events.c.sequence)
        .limit(bindparam("per_customer"))
        .lateral("e")
    )
    return select(after_cursor).select_from(cursors).join(after_cursor, true())


_POSTGRESQL_FEEDS = _postgresql_feeds()


@functools.lru_cache(maxsize=256)
def _sqlite_feeds(count: int) -> Select[Any]:
    terms = [
        and_(_events.c.customer_id == bindparam(f"c{i}"), _events.c.sequence > bindparam(f"s{i}")) for i in range(count)
    ]
    return (
        select(*_COLUMNS)
        .where(or_(*terms))
        .order_by(_events.c.customer_id, _events.c.sequence)
        .limit(bindparam("limit"))
    )


def read_feeds(conn: Connection, cursors: Mapping[str, int], limit: int) -> tuple[list[Any], bool]:
    """The events after each customer's cursor, for many customers in one statement (per 200 on SQLite).

    Rows of one customer come in sequence order. Returns the rows and whether
    more may be waiting (a limit was reached): then the caller reads again.
    PostgreSQL reads each customer through its own LATERAL index range with
    `limit` rows at most; SQLite runs the OR of per-customer ranges, `limit`
    rows per statement.
    """
    if not cursors:
        return [], False
    if conn.dialect.name == "postgresql":
        arrays = {"customer_ids": list(cursors), "cursors": list(cursors.values()), "per_customer": limit}
        rows = list(conn.execute(_POSTGRESQL_FEEDS, arrays))
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.customer_id] = counts.get(row.customer_id, 0) + 1
        return rows, any(n >= limit for n in counts.values())
    items = list(cursors.items())
    rows = []
    more = False
    for start in range(0, len(items), _SQLITE_FEEDS_PER_STATEMENT):
        chunk = items[start : start + _SQLITE_FEEDS_PER_STATEMENT]
        params: dict[str, Any] = {"limit": limit}
        for i, (customer_id, cursor) in enumerate(chunk):
            params[f"c{i}"], params[f"s{i}"] = customer_id, cursor
        found = list(conn.execute(_sqlite_feeds(len(chunk)), params))
        more = more or len(found) >= limit
        rows.extend(found)
    return rows, more


_prunable = (
    select(_events.c.customer_id, func.max(_events.c.sequence))
    .where(_events.c.tm_create < bindparam("cutoff"))
    .group_by(_events.c.customer_id)
)
_oldest = select(func.min(_events.c.sequence)).where(_events.c.customer_id == bindparam("customer_id"))
_delete_prefix = delete(_events).where(
    _events.c.customer_id == bindparam("customer_id"), _events.c.sequence <= bindparam("upto")
)


def prunable_prefixes(conn: Connection, cutoff_us: int) -> list[tuple[str, int]]:
    """(customer, highest sequence to delete) for every customer with events written before `cutoff_us`.

    Everything up to that sequence goes, even a row whose time is a little
    later (replicas' clocks differ by milliseconds): a prefix, never a hole.
    """
    return [(row[0], row[1]) for row in conn.execute(_prunable, {"cutoff": cutoff_us})]


def delete_prefix_batch(conn: Connection, customer_id: str, upto: int, batch: int) -> int:
    """Delete the customer's oldest events, at most `batch` of them and none above `upto`; returns the count."""
    oldest = conn.execute(_oldest, {"customer_id": customer_id}).scalar()
    if oldest is None or oldest > upto:
        return 0
    bound = min(upto, oldest + batch - 1)  # sequences are gap-free: at most `batch` rows
    return conn.execute(_delete_prefix, {"customer_id": customer_id, "upto": bound}).rowcount or 0
