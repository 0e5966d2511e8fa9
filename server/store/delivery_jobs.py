"""The delivery queue in SQL: insert jobs with their message, claim due ones, record each attempt.

Claims are leases. `claim_due` picks jobs that are due and not leased
(`locked_until` unset or past), leases them to one worker and marks their
attempt `sending` (that commit precedes the provider call): on PostgreSQL
the SELECT takes row locks with `FOR UPDATE SKIP LOCKED`, so replicas
claiming at the same moment each get different jobs and never wait on each
other; on SQLite the writer lock (BEGIN IMMEDIATE) serialises claims. Every
later write names the worker (`claimed_by`) and the lease it holds, so a
worker whose lease ran out and was taken over cannot record anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import Connection, and_, bindparam, case, or_, select, tuple_, update

from convhub.server.store.bulk import BulkInsert
from convhub.server.store.models import DeliveryJob, predicate_value, table

jobs = table(DeliveryJob)
INSERT_JOB = BulkInsert(jobs)

QUEUED = "queued"
SENDING = "sending"
DONE = "done"
FAILED = "failed"


class JobRow(Protocol):
    id: str
    customer_id: str
    message_id: str
    state: str
    channel: str
    account_id: str
    allow_fallback: bool
    tried_channels: list[str]
    attempts: int
    next_attempt_at: int
    locked_until: int | None
    claimed_by: str
    attempt_started_at: int | None
    last_error: str


_by_id = select(jobs).where(jobs.c.id == bindparam("id"))


def job_values(
    *, job_id: str, customer_id: str, message_id: str, channel: str, account_id: str, allow_fallback: bool, now: int
) -> dict[str, Any]:
    """A new job, due at once."""
    return {
        "id": job_id,
        "customer_id": customer_id,
        "message_id": message_id,
        "state": QUEUED,
        "channel": channel,
        "account_id": account_id,
        "allow_fallback": allow_fallback,
        "tried_channels": [channel],
        "attempts": 0,
        "next_attempt_at": now,
        "locked_until": None,
        "claimed_by": "",
        "attempt_started_at": None,
        "last_error": "",
        "tm_create": now,
        "tm_update": now,
    }


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job leased to a worker with its attempt marked `sending`.

    `interrupted`: it was already `sending` under an expired lease, so an
    earlier attempt's outcome is unknown; `previous_attempt_at` is when that
    attempt began.
    """

    job: JobRow
    interrupted: bool
    previous_attempt_at: int | None


_due = (
    select(jobs.c.id, jobs.c.state, jobs.c.attempt_started_at)
    .where(
        jobs.c.state.in_([predicate_value(QUEUED), predicate_value(SENDING)]),  # ix_delivery_jobs_due's
        jobs.c.next_attempt_at <= bindparam("now"),
        or_(jobs.c.locked_until.is_(None), jobs.c.locked_until < bindparam("now")),
    )
    .order_by(jobs.c.next_attempt_at)
    .limit(bindparam("limit"))
)
_lease = update(jobs).values(
    state=SENDING,
    attempts=jobs.c.attempts + 1,
    # An interrupted attempt keeps its start: find_sent looks for it from then on.
    attempt_started_at=case((jobs.c.state == SENDING, jobs.c.attempt_started_at), else_=bindparam("now")),
    locked_until=bindparam("locked_until"),
    claimed_by=bindparam("worker"),
    tm_update=bindparam("now"),
)
# PostgreSQL: one statement picks (row locks, SKIP LOCKED), leases and returns each job with its state before.
_due_locked = _due.with_for_update(skip_locked=True).cte("due")
_claim_locked = _lease.where(jobs.c.id == _due_locked.c.id).returning(
    *jobs.c, _due_locked.c.state.label("state_before"), _due_locked.c.attempt_started_at.label("started_before")
)
# SQLite (claims serialised by BEGIN IMMEDIATE; its RETURNING cannot name an UPDATE's FROM tables): pick, then lease.
_claim_picked = _lease.where(jobs.c.id.in_(bindparam("ids", expanding=True))).returning(*jobs.c)


def claim_due(conn: Connection, worker: str, limit: int, now: int, lease_us: int) -> list[Claimed]:
    """Lease up to `limit` due jobs to `worker` and mark each attempt `sending`, in the caller's transaction.

    The claim's commit is the attempt's "sending" mark: it lands before the
    provider is called, so a crash after it leaves evidence of the attempt.
    A claim is on the path from a send's commit to the provider's request, so
    it is one statement on PostgreSQL and two on SQLite (it was four).
    """
    params: dict[str, Any] = {"now": now, "limit": limit, "locked_until": now + lease_us, "worker": worker}
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_claim_locked, params).all()
        before = {row.id: (row.state_before, row.started_before) for row in rows}
    else:
        before = {row.id: (row.state, row.attempt_started_at) for row in conn.execute(_due, params)}
        if not before:
            return []
        rows = conn.execute(_claim_picked, {**params, "ids": list(before)}).all()
    in_order = sorted(rows, key=lambda row: (row.next_attempt_at, row.id))
    return [Claimed(cast("JobRow", row), before[row.id][0] == SENDING, before[row.id][1]) for row in in_order]


def _held(job: JobRow) -> Any:
    """The condition that `job` is still leased as it was claimed (nobody took it over)."""
    return and_(jobs.c.id == job.id, jobs.c.claimed_by == job.claimed_by, jobs.c.locked_until == job.locked_until)


def finish(conn: Connection, job: JobRow, values: dict[str, Any]) -> bool:
    """Record an attempt's outcome and release the lease; False if the lease was lost (nothing written)."""
    result = conn.execute(update(jobs).where(_held(job)).values(locked_until=None, **values))
    return result.rowcount == 1


# (id, claimed_by, locked_until) IN (...): one cached statement whatever the batch size (row values: SQLite 3.15+).
_all_held = tuple_(jobs.c.id, jobs.c.claimed_by, jobs.c.locked_until).in_(bindparam("held", expanding=True))


def finish_held(conn: Connection, held: Sequence[JobRow], values: dict[str, Any]) -> set[str]:
    """`finish` for several jobs with the same outcome, one statement: the ids whose leases still held (written)."""
    if not held:
        return set()
    statement = update(jobs).where(_all_held).values(locked_until=None, **values).returning(jobs.c.id)
    leases = [(job.id, job.claimed_by, job.locked_until) for job in held]
    return set(conn.execute(statement, {"held": leases}).scalars())


def release(conn: Connection, worker: str, job_ids: Sequence[str], now: int) -> None:
    """Give back jobs `worker` claimed but never sent (a clean stop): queued again, the attempt not counted."""
    if job_ids:
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(list(job_ids)), jobs.c.claimed_by == worker, jobs.c.state == SENDING)
            .values(state=QUEUED, attempts=jobs.c.attempts - 1, locked_until=None, tm_update=now)
        )


def by_id(conn: Connection, job_id: str) -> JobRow | None:
    return cast("JobRow | None", conn.execute(_by_id, {"id": job_id}).first())
