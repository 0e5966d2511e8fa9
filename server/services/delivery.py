"""Delivery use cases: claim jobs, record each attempt's outcome on the job and its message, apply receipts.

The delivery worker (channels/delivery.py) drives these: `claim` leases due
jobs, `record_all` records the outcomes of the attempts that finished since
its last call, in one transaction; each change to a message writes its
`conversation_message_updated` event in that transaction. Outcomes are
recorded only while the worker still holds the job's lease
(store/delivery_jobs.py): an outcome whose lease was lost writes nothing,
and the others in its batch are recorded all the same.

Message status follows VoIPBIN: `progressing` until the provider accepts
(`done`) or every channel tried failed (`failed`). `delivery_status` is
refined by receipts and only moves forward (domain/delivery.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from convhub.server.config import Settings
from convhub.server.domain import delivery
from convhub.server.domain import messages as message_rules
from convhub.server.domain.channel_choice import FALLBACK
from convhub.server.errors import FailedPrecondition
from convhub.server.events.outbox import Change, append_event_groups
from convhub.server.services import resources
from convhub.server.services.channel_accounts import OpenedAccount, opened
from convhub.server.services.sending import route_values, routes_for
from convhub.server.store import accounts, conversations, delivery_jobs, messages
from convhub.server.store.db import Database, now_us
from convhub.server.store.delivery_jobs import Claimed, JobRow
from convhub.server.store.doorbell import Doorbell
from convhub.server.store.faults import classify, is_deadlock
from convhub.server.store.rows import AccountRow, MessageRow, plain_row
from convhub.v1 import event_pb2

log = logging.getLogger("convhub.delivery")


@dataclass(frozen=True, slots=True)
class Work:
    """What one attempt needs: the claimed job, its message and the account it goes through (None: deleted)."""

    claimed: Claimed
    message: MessageRow
    account: OpenedAccount | None
    reply_token: str | None = None  # LINE: the recipient's newest reply token, while it may still be good

    @property
    def job(self) -> JobRow:
        return self.claimed.job


ACCEPTED = "accepted"
RETRY = "retry"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, recorded on its job and message by the worker's record loop.

    accepted: the provider took it (`provider_message_id`, `reported` status);
    retry: a retryable failure, the job due again after `delay` seconds, the
    message unchanged; failed: final on this channel (`code`, `message`), the
    next eligible channel tried if `may_fall_back` and the job allows it.
    """

    job: JobRow
    kind: str
    provider_message_id: str = ""
    reported: str = ""
    code: str = ""
    message: str = ""
    delay: float = 0.0
    may_fall_back: bool = True

    @classmethod
    def accepted(cls, job: JobRow, provider_message_id: str, reported: str) -> Outcome:
        return cls(job, ACCEPTED, provider_message_id=provider_message_id, reported=reported)

    @classmethod
    def retry(cls, job: JobRow, error: str, delay: float) -> Outcome:
        return cls(job, RETRY, message=error, delay=delay)

    @classmethod
    def failed(cls, job: JobRow, code: str, message: str, *, may_fall_back: bool = True) -> Outcome:
        return cls(job, FAILED, code=code, message=message, may_fall_back=may_fall_back)


# LINE reply tokens are good for about a minute after the event; older ones are not tried.
REPLY_TOKEN_CHANNELS = frozenset({"line"})
REPLY_TOKEN_WINDOW_US = 50_000_000


def _fresh_reply_token(conn: Connection, message: MessageRow) -> str | None:
    """LINE: the recipient's newest reply token in this conversation, if it came within the window."""
    if message.channel not in REPLY_TOKEN_CHANNELS:
        return None
    now = now_us()
    return messages.reply_token(
        conn, message.conversation_id, message.destination_target, now - REPLY_TOKEN_WINDOW_US, now
    )


class DeliveryService:
    def __init__(self, db: Database, settings: Settings, bell: Doorbell) -> None:
        self.db = db
        self.settings = settings
        self.bell = bell

    def claim(self, worker: str, limit: int) -> list[Work]:
        """Lease up to `limit` due jobs to `worker`, attempts marked `sending` (SKIP LOCKED on PostgreSQL:
        replicas never share a job), with the message and account each attempt needs."""
        with self.db.writer.begin() as conn:
            return self._claim(conn, worker, limit)

    def _claim(self, conn: Connection, worker: str, limit: int) -> list[Work]:
        lease_us = int(self.settings.delivery_lease * 1_000_000)
        claimed = delivery_jobs.claim_due(conn, worker, limit, now_us(), lease_us)
        if not claimed:
            return []
        rows = messages.by_ids(conn, {c.job.message_id for c in claimed})
        found = {a.id: a for a in accounts.by_ids(conn, {c.job.account_id for c in claimed})}
        tokens = {c.job.id: _fresh_reply_token(conn, rows[c.job.message_id]) for c in claimed}
        return [
            Work(c, rows[c.job.message_id], self._opened(found.get(c.job.account_id)), tokens[c.job.id])
            for c in claimed
        ]

    def _opened(self, row: AccountRow | None) -> OpenedAccount | None:
        return opened(row, self.db.secrets) if row is not None and row.tm_delete is None else None

    def release(self, worker: str, job_ids: list[str]) -> None:
        with self.db.writer.begin() as conn:
            delivery_jobs.release(conn, worker, job_ids, now_us())

    def record_all(self, outcomes: Sequence[Outcome]) -> None:
        """Record finished attempts' outcomes in one transaction.

        One transaction per batch, not one per outcome: the event counter row,
        BEGIN/COMMIT (and on PostgreSQL the round trips) are paid once. If the
        batch fails as a whole (a provider id that is another message's, a
        deadlock, any error) it rolls back and every outcome is recorded
        alone, so one outcome fails only for its own reasons. An error that is
        the database's doing is raised: the caller keeps the outcomes and tries again.
        """
        if not outcomes:
            return
        try:
            with self.db.writer.begin() as conn:
                fell_back = self._record(conn, outcomes)
        except Exception as exc:
            if classify(exc) is not None and not is_deadlock(exc):
                raise
            fell_back = False
            for outcome in outcomes:
                try:
                    fell_back = self.record(outcome) or fell_back
                except Exception:  # its lease expires; the next claim treats it as interrupted (find_sent)
                    log.exception("delivery: recording the outcome of job %s failed", outcome.job.id)
        if fell_back:
            self.bell.ring()  # a job queued on the next channel

    def record(self, outcome: Outcome) -> bool:
        """One outcome in its own transaction (True: it fell back to another channel, a job is queued).

        An accepted outcome whose provider id belongs to another message (an
        "outcome unknown" match that was not ours) fails the job instead.
        """
        try:
            with self.db.writer.begin() as conn:
                return self._record(conn, [outcome])
        except IntegrityError:
            if outcome.kind != ACCEPTED:
                raise
        unknown = Outcome.failed(
            outcome.job,
            delivery.OUTCOME_UNKNOWN,
            "the provider's message id belongs to another message; not resent",
            may_fall_back=False,
        )
        with self.db.writer.begin() as conn:
            return self._record(conn, [unknown])

    def _record(self, conn: Connection, outcomes: Sequence[Outcome]) -> bool:
        """Write `outcomes` where their leases still hold; True if any fell back to another channel.

        Accepted outcomes (the common case) cost a fixed number of statements
        per batch: their jobs finished in one, their messages locked in one
        (id order) and updated in one executemany. Failures and retries go one
        by one (in message id order). The events are appended once, last.
        """
        if not outcomes:
            return False
        now = now_us()
        events: list[tuple[str, Sequence[Change]]] = []
        accepted = [o for o in outcomes if o.kind == ACCEPTED]
        if accepted:
            done = {"state": delivery_jobs.DONE, "last_error": "", "tm_update": now}
            held = delivery_jobs.finish_held(conn, [o.job for o in accepted], done)
            accepted = [o for o in accepted if o.job.id in held]
            rows = messages.locked_many(conn, [o.job.message_id for o in accepted])
            changes = []
            for outcome in accepted:
                row = rows[outcome.job.message_id]
                status = message_rules.DONE if message_rules.can_move(row.status, message_rules.DONE) else row.status
                change = {
                    "status": status,
                    "delivery_status": delivery.advance(row.delivery_status, outcome.reported or delivery.SENT),
                    "transaction_id": outcome.provider_message_id,
                    "tm_update": now,
                }
                changes.append((row.id, change))
                events.append(_message_updated(row, change))
            messages.update_messages(conn, changes)
        fell_back = False
        for outcome in sorted((o for o in outcomes if o.kind != ACCEPTED), key=lambda o: o.job.message_id):
            job = outcome.job
            if outcome.kind == RETRY:
                values = {
                    "state": delivery_jobs.QUEUED,
                    "next_attempt_at": now + int(outcome.delay * 1_000_000),
                    "last_error": outcome.message[:2000],
                    "tm_update": now,
                }
                delivery_jobs.finish(conn, job, values)  # the message is unchanged
                continue
            row = _locked_message(conn, job.message_id)
            failed = self._failed(conn, job, row, outcome, now)
            if failed is None:
                continue
            change, queued_again = failed
            fell_back = fell_back or queued_again
            messages.update_message(conn, row.id, change)
            events.append(_message_updated(row, change))
        append_event_groups(conn, events)
        return fell_back

    def _failed(
        self, conn: Connection, job: JobRow, row: MessageRow, outcome: Outcome, now: int
    ) -> tuple[dict[str, Any], bool] | None:
        """A final failure on this channel: the job's next state and the message's change (True: it fell back to
        the next eligible channel), or None when the lease was lost."""
        code, message = outcome.code, outcome.message
        route = self._fallback_route(conn, job, row) if (outcome.may_fall_back and job.allow_fallback) else None
        error = f"{code}: {message}"[:2000]
        if route is not None:
            requeued = {
                "state": delivery_jobs.QUEUED,
                "channel": route.channel,
                "account_id": route.account_id,
                "tried_channels": [*job.tried_channels, route.channel],
                "attempts": 0,
                "attempt_started_at": None,
                "next_attempt_at": now,
                "last_error": error,
                "tm_update": now,
            }
            if not delivery_jobs.finish(conn, job, requeued):
                return None
            values = route_values(route)
            values["channel_reason"] = f"{FALLBACK} from {job.channel}"
            return {**values, "tm_update": now}, True
        if not delivery_jobs.finish(conn, job, {"state": delivery_jobs.FAILED, "last_error": error, "tm_update": now}):
            return None
        status = message_rules.FAILED if message_rules.can_move(row.status, message_rules.FAILED) else row.status
        return {
            "status": status,
            "delivery_status": delivery.advance(row.delivery_status, delivery.FAILED),
            "error_code": code[:64],
            "error_message": message[:2000],
            "tm_update": now,
        }, False

    def _fallback_route(self, conn: Connection, job: JobRow, row: MessageRow) -> Any:
        room = conversations.live.get(conn, row.customer_id, row.conversation_id)
        if room is None:
            return None
        try:
            routes = routes_for(
                conn, room, explicit=None, text=row.text, has_media=bool(row.medias), exclude=job.tried_channels
            )
        except FailedPrecondition:
            return None
        return routes[0]

    def receipt(
        self, account_id: str, provider_message_id: str, reported: str, error_code: str = "", error_message: str = ""
    ) -> bool:
        """A provider's report on a message we sent: move delivery_status forward only. False if no such message."""
        with self.db.writer.begin() as conn:
            account = accounts.live_by_id(conn, account_id)
            if account is None:
                return False
            found = messages.by_provider_ids(conn, [(account.customer_id, account_id, provider_message_id)])
            if not found or found[0].direction != message_rules.OUTGOING:
                return False
            row = _locked_message(conn, found[0].id)
            values: dict[str, Any] = {}
            status = delivery.advance(row.delivery_status, reported)
            if status != row.delivery_status:
                values["delivery_status"] = status
                if status in (delivery.FAILED, delivery.UNDELIVERED) and (error_code or error_message):
                    values["error_code"] = error_code[:64]
                    values["error_message"] = error_message[:2000]
            if values:
                values["tm_update"] = now_us()
                messages.update_message(conn, row.id, values)
                append_event_groups(conn, [_message_updated(row, values)])
        return True


def _locked_message(conn: Connection, message_id: str) -> MessageRow:
    row = messages.locked(conn, message_id)
    assert row is not None  # jobs and receipts only name messages that exist (soft deletes keep the row)
    return cast("MessageRow", plain_row(messages.messages, cast("Any", row)))


def _message_updated(row: MessageRow, values: dict[str, Any]) -> tuple[str, Sequence[Change]]:
    """The `conversation_message_updated` event of writing `values` to `row` (no read-back: the row is locked)."""
    updated = resources.message(cast("Any", row)._replace(**values))
    return row.customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_UPDATED, updated)]
