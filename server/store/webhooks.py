"""Webhook endpoints and deliveries: every statement the API and the emitter run on them.

Two queues meet here, both safe with several replicas on one PostgreSQL:

* fan-out: endpoints whose `cursor` is behind their customer's event counter
  are claimed `FOR UPDATE SKIP LOCKED`; their new events become delivery rows
  and the cursor advances in the same transaction, so no event becomes two
  deliveries for one endpoint (the unique (endpoint, sequence) index backs it).
* delivery: due rows are claimed `FOR UPDATE SKIP LOCKED` and leased
  (`locked_by`, `locked_until`); a killed worker's lease just runs out. Only
  the `head` of each chain (the lowest pending sequence of one endpoint and
  conversation) is claimable, and a settled head passes the mark on, so one
  conversation's events reach an endpoint in order while a failing one holds
  back nothing else. Fan-out and hand-over both hold the endpoint's row lock,
  so a chain never has two heads or none.

Secrets are stored sealed (store/secrets.py): callers pass sealed text in,
and the claim opens it with the box it is given, for the sender alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    Select,
    String,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)

from convhub.server.store.bulk import BulkInsert
from convhub.server.store.db import new_id, now_us
from convhub.server.store.keysets import UnnestRows
from convhub.server.store.live_rows import LiveRows
from convhub.server.store.models import Customer, Event, WebhookDelivery, WebhookEndpoint, predicate_value, table
from convhub.server.store.pages import Lister, Page

endpoints = table(WebhookEndpoint)
deliveries = table(WebhookDelivery)
_customers = table(Customer)
_events = table(Event)

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
# The queue queries spell the partial indexes' predicates (`WHERE status = 'pending' [AND head]`) as they do.
_IS_PENDING = predicate_value(PENDING)
_IS_HEAD: ColumnElement[bool] = literal_column("webhook_deliveries.head")


# ---------------------------------------------------------------------------
# Endpoints (API side)

live: LiveRows[Any] = LiveRows(endpoints)
_default_endpoint = select(endpoints).where(
    endpoints.c.customer_id == bindparam("customer_id"),
    endpoints.c.customer_default.is_(True),
    endpoints.c.tm_delete.is_(None),
)
_event_seq = select(_customers.c.event_seq).where(_customers.c.id == bindparam("customer_id"))


def default_endpoint(conn: Connection, customer_id: str) -> Any:
    """The endpoint managed through the customer's `webhook_uri`, or None."""
    return conn.execute(_default_endpoint, {"customer_id": customer_id}).first()


def insert_endpoint(conn: Connection, customer_id: str, sealed_secret: str, **values: Any) -> str:
    """A new endpoint; it receives the customer's events committed after this point."""
    now = now_us()
    endpoint_id = new_id()
    cursor = conn.execute(_event_seq, {"customer_id": customer_id}).scalar_one()
    conn.execute(
        insert(endpoints).values(
            id=endpoint_id,
            customer_id=customer_id,
            secret=sealed_secret,
            cursor=cursor,
            tm_create=now,
            tm_update=now,
            **values,
        )
    )
    return endpoint_id


def update_endpoint(conn: Connection, endpoint_id: str, values: dict[str, Any]) -> None:
    if values:
        conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(tm_update=now_us(), **values))


def delete_endpoint(conn: Connection, endpoint_id: str) -> None:
    """Soft-delete the endpoint; its pending deliveries fail (nobody will send them)."""
    now = now_us()
    conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(tm_delete=now, tm_update=now))
    conn.execute(
        update(deliveries)
        .where(deliveries.c.endpoint_id == endpoint_id, deliveries.c.status == PENDING)
        .values(status=FAILED, last_error="endpoint deleted", locked_by=None, locked_until=None, tm_update=now)
    )


def rotate_secret(conn: Connection, endpoint_id: str, old_sealed: str, new_sealed: str, grace_us: int) -> None:
    """Make the new secret current; the old one keeps signing for `grace_us` (an older one is dropped)."""
    now = now_us()
    conn.execute(
        update(endpoints)
        .where(endpoints.c.id == endpoint_id)
        .values(
            secret=new_sealed,
            previous_secret=old_sealed if grace_us > 0 else None,
            previous_secret_expires=now + grace_us if grace_us > 0 else None,
            tm_update=now,
        )
    )


# ---------------------------------------------------------------------------
# Deliveries (API side)

_delivery = select(deliveries).where(
    deliveries.c.id == bindparam("id"),
    deliveries.c.endpoint_id == bindparam("endpoint_id"),
    deliveries.c.customer_id == bindparam("customer_id"),
)


_deliveries = Lister(deliveries, ("endpoint_id",), live_only=False)
_deliveries_by_status = Lister(deliveries, ("endpoint_id", "status"), live_only=False)


def delivery_page(
    conn: Connection, page: Page, customer_id: str, endpoint_id: str, status: str | None
) -> tuple[list[Any], str]:
    """One page of an endpoint's deliveries, oldest first, optionally of one status."""
    if status is None:
        return _deliveries.fetch(conn, page, customer_id, endpoint_id=endpoint_id)
    return _deliveries_by_status.fetch(conn, page, customer_id, endpoint_id=endpoint_id, status=status)


def delivery(conn: Connection, customer_id: str, endpoint_id: str, delivery_id: str) -> Any:
    params = {"id": delivery_id, "endpoint_id": endpoint_id, "customer_id": customer_id}
    return conn.execute(_delivery, params).first()


def retry_delivery(conn: Connection, row: Any) -> None:
    """Send again now with a fresh schedule, as its chain's head unless the chain has one already.

    (A lease held by a sender still in flight is left to expire.)
    """
    now = now_us()
    conn.execute(_lock_endpoints, {"ids": [row.endpoint_id]}).all()
    waiting = conn.execute(_open_chains, {"endpoint_id": row.endpoint_id, "keys": [row.ordering_key]}).first()
    head = row.head if row.status == PENDING else waiting is None
    conn.execute(
        update(deliveries)
        .where(deliveries.c.id == row.id)
        .values(status=PENDING, head=head, attempts=0, next_attempt_at=now, last_error="", tm_update=now)
    )


# ---------------------------------------------------------------------------
# Fan-out: events -> delivery rows

_behind_condition = and_(
    endpoints.c.tm_delete.is_(None), endpoints.c.disabled.is_(False), endpoints.c.cursor < _customers.c.event_seq
)
_behind = (
    select(endpoints.c.id, endpoints.c.customer_id, endpoints.c.cursor, endpoints.c.event_types)
    .join(_customers, _customers.c.id == endpoints.c.customer_id)
    .where(_behind_condition)
    .order_by(endpoints.c.cursor)
    .limit(bindparam("limit"))
)
_claim_behind = _behind.with_for_update(of=endpoints, skip_locked=True)
_events_after = (
    select(_events.c.sequence, _events.c.type, _events.c.payload)
    .where(_events.c.customer_id == bindparam("customer_id"), _events.c.sequence > bindparam("after"))
    .order_by(_events.c.sequence)
    .limit(bindparam("limit"))
)
_open_chains = (
    select(deliveries.c.ordering_key)
    .where(
        deliveries.c.endpoint_id == bindparam("endpoint_id"),
        deliveries.c.status == _IS_PENDING,
        deliveries.c.ordering_key.in_(bindparam("keys", expanding=True)),
    )
    .distinct()
)
_advance_cursor = (
    update(endpoints).where(endpoints.c.id == bindparam("endpoint_id")).values(cursor=bindparam("new_cursor"))
)


def _open_chain_keys(conn: Connection, endpoint_id: str, keys: set[str]) -> set[str]:
    """Which of these chains (ordering keys) have a pending delivery already: a new one joins behind its head.

    Fan-out asks this under the endpoint's row lock, as does passing the head on
    (`record_outcomes`), so a chain never ends up with no head or two.
    """
    if not keys:
        return set()
    return set(conn.execute(_open_chains, {"endpoint_id": endpoint_id, "keys": list(keys)}).scalars())


# Fan-out's INSERT, written for the driver: rows go as plain tuples, without SQLAlchemy's per-row parameter
# processing, to executemany on SQLite and COPY on PostgreSQL (bulk.py). Measured per delivery row,
# transaction included: SQLite 24.5 -> 23.1 us, PostgreSQL 48.6 -> 44.0 us (executemany); on SQLite that
# transaction holds the one write lock the API's commits wait for. Every column is a str, int or bool,
# which both drivers take as they are.
_DELIVERY_COLUMNS = (
    "id",
    "customer_id",
    "endpoint_id",
    "event_id",
    "event_sequence",
    "event_type",
    "ordering_key",
    "body",
    "status",
    "head",
    "attempts",
    "next_attempt_at",
    "last_response_code",
    "last_error",
    "tm_create",
    "tm_update",
)
_insert_deliveries = BulkInsert(deliveries)


def _by_customer(endpoints_behind: Sequence[Any]) -> dict[str, list[Any]]:
    """Endpoint rows (`_behind`'s columns) grouped by customer: one read of each customer's events serves them all."""
    groups: dict[str, list[Any]] = {}
    for row in endpoints_behind:
        groups.setdefault(row.customer_id, []).append(row)
    return groups


# An event's rendered body by (customer id, sequence), made before fan-out's write transaction.
Rendered: TypeAlias = dict[tuple[str, int], "RenderedBody"]


def render_behind(
    conn: Connection, render: Callable[[bytes], RenderedBody], *, endpoint_limit: int = 50, event_limit: int = 500
) -> Rendered | None:
    """Render, on a read connection, the bodies the next `fan_out` will most likely need; None: no endpoint is behind.

    Rendering is most of a fan-out's work; done here, it stays out of the
    write transaction and so out of the write lock's time (one lock, on
    SQLite, that the API's writes wait for). What `fan_out` then finds
    unrendered (an event committed meanwhile) it renders itself.
    """
    behind = conn.execute(_behind, {"limit": endpoint_limit}).all()
    if not behind:
        return None
    bodies: Rendered = {}
    for customer_id, group in _by_customer(behind).items():
        after = min(r.cursor for r in group)
        # The types some endpoint of the group wants; None: one wants every type.
        wanted = None if any(not e.event_types for e in group) else {t for e in group for t in e.event_types}
        params = {"customer_id": customer_id, "after": after, "limit": event_limit}
        for ev in conn.execute(_events_after, params):
            if wanted is None or ev.type in wanted:
                bodies[(customer_id, ev.sequence)] = render(ev.payload)
    return bodies


@dataclass(frozen=True)
class RenderedBody:
    event_id: str
    body: str
    ordering_key: str


def fan_out(
    conn: Connection,
    render: Callable[[bytes], RenderedBody],
    first_delay_us: int,
    *,
    rendered: Rendered | None = None,
    endpoint_limit: int = 50,
    event_limit: int = 500,
) -> tuple[int, bool] | None:
    """Turn new events into deliveries for a batch of endpoints; (deliveries made, more work left).

    Bodies come from `rendered` (`render_behind`) where they are there, else
    from `render`. None when no endpoint behind could be claimed: there is
    none, or other transactions hold them all (SKIP LOCKED).
    """
    claimed = conn.execute(_claim_behind, {"limit": endpoint_limit}).all()
    if not claimed:
        return None
    by_customer = _by_customer(claimed)
    now = now_us()
    due = now + first_delay_us
    rows: list[tuple[Any, ...]] = []
    cursors: list[dict[str, Any]] = []
    more = len(claimed) == endpoint_limit
    bodies: Rendered = rendered if rendered is not None else {}
    for customer_id, group in by_customer.items():
        after = min(r.cursor for r in group)
        events = conn.execute(_events_after, {"customer_id": customer_id, "after": after, "limit": event_limit}).all()
        if not events:
            continue
        last = events[-1].sequence
        more = more or len(events) == event_limit
        for endpoint in group:
            wanted = set(endpoint.event_types or ())
            picked: list[tuple[int, str, RenderedBody]] = []
            for ev in events:
                if ev.sequence <= endpoint.cursor or (wanted and ev.type not in wanted):
                    continue
                body = bodies.get((customer_id, ev.sequence))
                if body is None:
                    body = bodies[(customer_id, ev.sequence)] = render(ev.payload)
                picked.append((ev.sequence, ev.type, body))
            # The first new delivery of each chain with nothing pending yet becomes its head.
            chains = _open_chain_keys(conn, endpoint.id, {body.ordering_key for _, _, body in picked})
            for sequence, event_type, body in picked:
                head = body.ordering_key not in chains
                if head:
                    chains.add(body.ordering_key)
                # In _DELIVERY_COLUMNS' order.
                rows.append(
                    (
                        new_id(),
                        customer_id,
                        endpoint.id,
                        body.event_id,
                        sequence,
                        event_type,
                        body.ordering_key,
                        body.body,
                        PENDING,
                        head,
                        0,
                        due,
                        0,
                        "",
                        now,
                        now,
                    )
                )
            if last > endpoint.cursor:
                cursors.append({"endpoint_id": endpoint.id, "new_cursor": last})
    if rows:
        _insert_deliveries.tuples(conn, _DELIVERY_COLUMNS, rows)
    if cursors:
        conn.execute(_advance_cursor, cursors)
    return len(rows), more


# ---------------------------------------------------------------------------
# Delivery: claim, lease, record the outcome


@dataclass(frozen=True)
class ClaimedDelivery:
    id: str
    endpoint_id: str
    ordering_key: str
    event_id: str
    body: str
    attempts: int
    url: str
    secrets: tuple[str, ...]  # current first, then one still in its rotation grace period
    # A chain head's next pending deliveries, leased with it and sent after it in order (see claim_due).
    followers: tuple[ClaimedDelivery, ...] = ()


# What an attempt needs of a delivery (ClaimedDelivery's first fields), for heads and followers alike.
_SENT_COLUMNS = (
    deliveries.c.id,
    deliveries.c.endpoint_id,
    deliveries.c.ordering_key,
    deliveries.c.event_id,
    deliveries.c.body,
    deliveries.c.attempts,
)
_claim_due = (
    select(
        *_SENT_COLUMNS,
        endpoints.c.url,
        endpoints.c.secret,
        endpoints.c.previous_secret,
        endpoints.c.previous_secret_expires,
    )
    .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
    .where(
        deliveries.c.status == _IS_PENDING,
        deliveries.c.next_attempt_at <= bindparam("now"),
        or_(deliveries.c.locked_until.is_(None), deliveries.c.locked_until < bindparam("now")),
        endpoints.c.tm_delete.is_(None),
        endpoints.c.disabled.is_(False),
        deliveries.c.endpoint_id.not_in(bindparam("full", expanding=True)),
        _IS_HEAD,
    )
    .order_by(deliveries.c.next_attempt_at)
    .limit(bindparam("limit"))
    .with_for_update(of=deliveries, skip_locked=True)
)
# One statement per claim for all the deliveries it leases (not one UPDATE each): PostgreSQL gets the ids as
# one array, so the statement text is the same for any number (see keysets.py).
_lease = (
    update(deliveries)
    .where(deliveries.c.id.in_(bindparam("ids", expanding=True)))
    .values(locked_by=bindparam("worker"), locked_until=bindparam("until"))
)
_lease_pg = text(
    "UPDATE webhook_deliveries SET locked_by = :worker, locked_until = :until WHERE id = ANY(CAST(:ids AS text[]))"
)
# The next pending deliveries of some chains, in order, `follow` at most per chain: each chain is read through the
# pending_chain index from its start and the read stops after `follow` rows, so a chain's backlog (an endpoint
# that was down for a day) costs nothing here. (A ROW_NUMBER() window over the chains read every pending row:
# 50 ms for a chain of 20,000 on SQLite, inside the write transaction.) No row locks: a delivery that is not its
# chain's head is claimed by nobody else, and fan-out only appends behind it.
_FOLLOWER_COLUMNS = (*_SENT_COLUMNS, deliveries.c.event_sequence)


def _next_in(endpoint_id: ColumnElement[str], ordering_key: ColumnElement[str]) -> Select[Any]:
    return (
        select(*_FOLLOWER_COLUMNS)
        .where(
            deliveries.c.endpoint_id == endpoint_id,
            deliveries.c.ordering_key == ordering_key,
            deliveries.c.status == _IS_PENDING,
            deliveries.c.head.is_(False),
        )
        .order_by(deliveries.c.event_sequence)
        .limit(bindparam("follow"))
    )


# PostgreSQL: one statement, a LATERAL read per chain of the (endpoint, key) arrays.
_text_array = ARRAY(String)
_chains = (
    func.unnest(bindparam("endpoint_ids", type_=_text_array), bindparam("ordering_keys", type_=_text_array))
    .table_valued("endpoint_id", "ordering_key")
    .render_derived(name="chains")
)
_next_of_chains = _next_in(_chains.c.endpoint_id, _chains.c.ordering_key).lateral("next_of_chain")
_followers_pg = select(_next_of_chains).select_from(_chains).join(_next_of_chains, true())
# SQLite (no LATERAL): one indexed read per chain, in process.
_followers_of_one = _next_in(bindparam("endpoint_id"), bindparam("ordering_key"))


def _followers(conn: Connection, chains: Sequence[tuple[str, str]], follow: int) -> list[Any]:
    """Up to `follow` pending non-head deliveries of each (endpoint_id, ordering_key) chain, each chain in order."""
    if conn.dialect.name == "postgresql":
        endpoint_ids, ordering_keys = (list(column) for column in zip(*chains, strict=True))
        params = {"endpoint_ids": endpoint_ids, "ordering_keys": ordering_keys, "follow": follow}
        rows = conn.execute(_followers_pg, params).all()
        return sorted(rows, key=lambda r: (r.endpoint_id, r.ordering_key, r.event_sequence))
    return [
        row
        for endpoint_id, ordering_key in chains
        for row in conn.execute(
            _followers_of_one, {"endpoint_id": endpoint_id, "ordering_key": ordering_key, "follow": follow}
        )
    ]


def _claimed(r: Any, url: str, secrets: tuple[str, ...]) -> ClaimedDelivery:
    """A delivery row read with `_SENT_COLUMNS`, going to `url` signed with `secrets`."""
    return ClaimedDelivery(r.id, r.endpoint_id, r.ordering_key, r.event_id, r.body, r.attempts, url, secrets)


def claim_due(
    conn: Connection,
    worker: str,
    limit: int,
    lease_us: int,
    room: Callable[[str], int],
    open_secret: Callable[[str], str],
    full: Sequence[str] = (),
    follow: int = 0,
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due chain heads, at most `room(endpoint_id)` more per endpoint, each with the next
    `follow` pending deliveries of its chain.

    A chain's deliveries go one after another, so a head alone moves its
    conversation one event per claim-and-record round trip; leased with its
    followers, the worker sends them back to back (in order, stopping at the
    first that must wait for a retry, and giving back the rest).
    """
    now = now_us()
    rows = conn.execute(_claim_due, {"now": now, "limit": limit, "full": list(full)}).all()
    heads: list[ClaimedDelivery] = []
    per_endpoint: dict[str, int] = {}
    for r in rows:
        used = per_endpoint.get(r.endpoint_id, 0)
        if used >= room(r.endpoint_id):
            continue  # left unleased: the row lock ends with this transaction
        per_endpoint[r.endpoint_id] = used + 1
        secrets = [open_secret(r.secret)]
        if r.previous_secret and (r.previous_secret_expires or 0) > now:
            secrets.append(open_secret(r.previous_secret))
        heads.append(_claimed(r, r.url, tuple(secrets)))
    if heads and follow > 0:
        chains = {(h.endpoint_id, h.ordering_key): h for h in heads}
        followers: dict[tuple[str, str], list[ClaimedDelivery]] = {chain: [] for chain in chains}
        for f in _followers(conn, list(chains), follow):
            head = chains[(f.endpoint_id, f.ordering_key)]
            followers[(f.endpoint_id, f.ordering_key)].append(_claimed(f, head.url, head.secrets))
        heads = [dataclasses.replace(h, followers=tuple(followers[chain])) for chain, h in chains.items()]
    leased = [d.id for h in heads for d in (h, *h.followers)]
    if leased:
        lease = _lease_pg if conn.dialect.name == "postgresql" else _lease
        conn.execute(lease, {"ids": leased, "worker": worker, "until": now + lease_us})
    return heads


@dataclass(frozen=True)
class Outcome:
    """What one attempt ended in; `next_attempt_at` None means no further attempt is scheduled."""

    delivery_id: str
    endpoint_id: str
    ordering_key: str
    status: str
    attempts: int
    next_attempt_at: int
    response_code: int
    error: str
    disable_reason: str = ""  # non-empty: the endpoint asked to be disabled (410 Gone)


_record = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_id"), deliveries.c.locked_by == bindparam("worker"))
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        next_attempt_at=bindparam("next_at"),
        last_response_code=bindparam("code"),
        last_error=bindparam("error"),
        locked_by=None,
        locked_until=None,
        tm_update=bindparam("now"),
    )
)
# PostgreSQL: the outcomes of a cycle as one UPDATE (UnnestRows), not one pipelined UPDATE each.
_outcome_rows = UnnestRows(
    *(("delivery_id", "text"), ("status", "text"), ("attempts", "int")),
    *(("next_at", "bigint"), ("code", "int"), ("error", "text")),
)
_record_pg = text(
    "UPDATE webhook_deliveries AS d SET status = r.status, attempts = r.attempts, next_attempt_at = r.next_at,"
    " last_response_code = r.code, last_error = r.error, locked_by = NULL, locked_until = NULL, tm_update = :now"
    f" FROM {_outcome_rows.sql}"
    " WHERE d.id = r.delivery_id AND d.locked_by = :worker"
)
_give_back = (
    update(deliveries)
    .where(deliveries.c.id.in_(bindparam("ids", expanding=True)), deliveries.c.locked_by == bindparam("worker"))
    .values(locked_by=None, locked_until=None)
)
_disable = (
    update(endpoints)
    .where(endpoints.c.id == bindparam("endpoint_id"), endpoints.c.tm_delete.is_(None))
    .values(disabled=True, disabled_reason=bindparam("reason"), tm_update=bindparam("now"))
)


_lock_endpoints = (
    select(endpoints.c.id)
    .where(endpoints.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(endpoints.c.id)
    .with_for_update()
)
_chain = deliveries.alias("chain")  # a name of its own, or the subquery would correlate with the UPDATE
_next_in_chain = (
    select(_chain.c.id)
    .where(
        _chain.c.endpoint_id == bindparam("chain_endpoint"),
        _chain.c.ordering_key == bindparam("chain_key"),
        _chain.c.status == _IS_PENDING,
    )
    .order_by(_chain.c.event_sequence)
    .limit(1)
    .scalar_subquery()
)
_pass_head = update(deliveries).where(deliveries.c.id == _next_in_chain).values(head=True)


def record_outcomes(conn: Connection, worker: str, outcomes: Sequence[Outcome], given_back: Sequence[str] = ()) -> None:
    """Store attempts' results and pass each settled chain's head on to its next pending delivery; release the
    leases of `given_back` (followers not sent: their chain waits for a retry).

    A result whose lease was lost (expired and taken over) is dropped. The
    endpoints' rows are locked first (in id order: no deadlock between
    replicas), which orders this against a fan-out adding to the same chains.
    """
    now = now_us()
    if given_back:
        conn.execute(_give_back, {"ids": list(given_back), "worker": worker})
    settled = {(o.endpoint_id, o.ordering_key) for o in outcomes if o.status != PENDING}
    if settled:
        conn.execute(_lock_endpoints, {"ids": sorted({e for e, _ in settled})}).all()
    params = [
        {
            "delivery_id": o.delivery_id,
            "worker": worker,
            "status": o.status,
            "attempts": o.attempts,
            "next_at": o.next_attempt_at,
            "code": o.response_code,
            "error": o.error[:512],
            "now": now,
        }
        for o in outcomes
    ]
    if params and conn.dialect.name == "postgresql" and len(params) > 1:
        arrays = _outcome_rows.params(params, last_per=("delivery_id",))
        conn.execute(_record_pg, {**arrays, "worker": worker, "now": now})
    elif params:
        conn.execute(_record, params)
    if settled:
        conn.execute(_pass_head, [{"chain_endpoint": e, "chain_key": k} for e, k in sorted(settled)])
    disable = [
        {"endpoint_id": o.endpoint_id, "reason": o.disable_reason, "now": now} for o in outcomes if o.disable_reason
    ]
    if disable:
        conn.execute(_disable, disable)


def release(conn: Connection, worker: str) -> None:
    """Give back every lease this worker holds (on a clean stop)."""
    conn.execute(
        update(deliveries)
        .where(deliveries.c.locked_by == worker, deliveries.c.status == PENDING)
        .values(locked_by=None, locked_until=None)
    )
