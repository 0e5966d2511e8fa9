"""Delivery use cases: claim jobs, record each attempt's outcome on the job and its message, apply receipts.

The delivery worker (channels/delivery.py) drives these; each is one
transaction, and each change to a message writes its
`conversation_message_updated` event in that transaction. Outcomes are
recorded only while the worker still holds the job's lease
(store/delivery_jobs.py): a worker that lost its lease writes nothing.

Message status follows VoIPBIN: `progressing` until the provider accepts
(`done`) or every channel tried failed (`failed`). `delivery_status` is
refined by receipts and only moves forward (domain/delivery.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from convhub.server.config import Settings
from convhub.server.domain import delivery
from convhub.server.domain import messages as message_rules
from convhub.server.domain.channel_choice import FALLBACK
from convhub.server.errors import FailedPrecondition
from convhub.server.events.outbox import append_events
from convhub.server.services import resources
from convhub.server.services.channel_accounts import OpenedAccount, opened
from convhub.server.services.sending import route_values, routes_for
from convhub.server.store import accounts, conversations, delivery_jobs, messages
from convhub.server.store.db import Database, now_us
from convhub.server.store.delivery_jobs import Claimed, JobRow
from convhub.server.store.doorbell import Doorbell
from convhub.server.store.rows import AccountRow, MessageRow
from convhub.v1 import event_pb2


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
        lease_us = int(self.settings.delivery_lease * 1_000_000)
        with self.db.writer.begin() as conn:
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

    def accepted(self, job: JobRow, provider_message_id: str, reported: str) -> bool:
        """The provider took the message: job done, message `done` with the provider's id and status.

        False when the provider's id is already another message's (an
        "outcome unknown" match that was not ours): the caller then fails the job.
        """
        try:
            with self.db.writer.begin() as conn:
                now = now_us()
                done = {"state": delivery_jobs.DONE, "last_error": "", "tm_update": now}
                if not delivery_jobs.finish(conn, job, done):
                    return True
                row = _locked_message(conn, job.message_id)
                status = message_rules.DONE if message_rules.can_move(row.status, message_rules.DONE) else row.status
                _update_message(
                    conn,
                    row,
                    {
                        "status": status,
                        "delivery_status": delivery.advance(row.delivery_status, reported or delivery.SENT),
                        "transaction_id": provider_message_id,
                        "tm_update": now,
                    },
                )
        except IntegrityError:
            return False
        return True

    def retry_later(self, job: JobRow, error: str, delay: float) -> None:
        """A retryable failure: back to `queued`, due again after `delay` seconds; the message is unchanged."""
        with self.db.writer.begin() as conn:
            now = now_us()
            delivery_jobs.finish(
                conn,
                job,
                {
                    "state": delivery_jobs.QUEUED,
                    "next_attempt_at": now + int(delay * 1_000_000),
                    "last_error": error[:2000],
                    "tm_update": now,
                },
            )

    def failed(self, job: JobRow, code: str, message: str, *, may_fall_back: bool = True) -> None:
        """A final failure on this channel: fall back to the next eligible channel if allowed, else fail the message."""
        fell_back = False
        with self.db.writer.begin() as conn:
            now = now_us()
            row = _locked_message(conn, job.message_id)
            route = self._fallback_route(conn, job, row) if (may_fall_back and job.allow_fallback) else None
            error = f"{code}: {message}"[:2000]
            if route is not None:
                if not delivery_jobs.finish(
                    conn,
                    job,
                    {
                        "state": delivery_jobs.QUEUED,
                        "channel": route.channel,
                        "account_id": route.account_id,
                        "tried_channels": [*job.tried_channels, route.channel],
                        "attempts": 0,
                        "attempt_started_at": None,
                        "next_attempt_at": now,
                        "last_error": error,
                        "tm_update": now,
                    },
                ):
                    return
                values = route_values(route)
                values["channel_reason"] = f"{FALLBACK} from {job.channel}"
                _update_message(conn, row, {**values, "tm_update": now})
                fell_back = True
            else:
                if not delivery_jobs.finish(
                    conn, job, {"state": delivery_jobs.FAILED, "last_error": error, "tm_update": now}
                ):
                    return
                status = (
                    message_rules.FAILED if message_rules.can_move(row.status, message_rules.FAILED) else row.status
                )
                _update_message(
                    conn,
                    row,
                    {
                        "status": status,
                        "delivery_status": delivery.advance(row.delivery_status, delivery.FAILED),
                        "error_code": code[:64],
                        "error_message": message[:2000],
                        "tm_update": now,
                    },
                )
        if fell_back:
            self.bell.ring()

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
                _update_message(conn, row, {**values, "tm_update": now_us()})
        return True


def _locked_message(conn: Connection, message_id: str) -> MessageRow:
    row = messages.locked(conn, message_id)
    assert row is not None  # jobs and receipts only name messages that exist (soft deletes keep the row)
    return row


def _update_message(conn: Connection, row: MessageRow, values: dict[str, Any]) -> None:
    """Write `values` and the `conversation_message_updated` event, in the caller's transaction."""
    messages.update_message(conn, row.id, values)
    updated = resources.message(messages.live.by_id(conn, row.id))
    append_events(conn, row.customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_UPDATED, updated)])
