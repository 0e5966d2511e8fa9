"""AIP-155 request ids: a retried create returns what the first call created.

The key row is inserted in the creating transaction, so the key and the
resource commit together or not at all. Two concurrent first calls with the
same id collide on the primary key; the loser's transaction fails and its
retry finds the winner's resource.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, bindparam, select

from convhub.server.store.bulk import BulkInsert
from convhub.server.store.db import now_us
from convhub.server.store.keysets import KeyLookup
from convhub.server.store.models import IdempotencyKey, table

_keys = table(IdempotencyKey)


_lookup = select(_keys.c.resource_id).where(
    _keys.c.customer_id == bindparam("customer_id"),
    _keys.c.method == bindparam("method"),
    _keys.c.request_id == bindparam("request_id"),
)
_lookup_many = KeyLookup(_keys, ("customer_id", "request_id"), _keys.c.method == bindparam("method"))
RECORD = BulkInsert(_keys)


def lookup(conn: Connection, customer_id: str, method: str, request_id: str) -> str | None:
    """The id of the resource an earlier call with this request id created, if any."""
    params = {"customer_id": customer_id, "method": method, "request_id": request_id}
    return conn.execute(_lookup, params).scalar()


def lookup_many(conn: Connection, method: str, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """For many (customer, request_id) pairs at once: the resource ids earlier calls created."""
    rows = _lookup_many.fetch(conn, list(keys), method=method)
    return {(r.customer_id, r.request_id): r.resource_id for r in rows}


def key_row(customer_id: str, method: str, request_id: str, resource_id: str) -> dict[str, object]:
    """The row RECORD inserts (for callers that batch their inserts)."""
    return {
        "customer_id": customer_id,
        "method": method,
        "request_id": request_id,
        "resource_id": resource_id,
        "tm_create": now_us(),
    }


def record(conn: Connection, customer_id: str, method: str, request_id: str, resource_id: str) -> None:
    RECORD(conn, [key_row(customer_id, method, request_id, resource_id)])
