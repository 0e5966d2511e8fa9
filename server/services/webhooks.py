"""Webhook endpoints and their deliveries: the use cases, one transaction each.

Rules kept here: a URL must be http(s) and every address it resolves to
allowed (checked before the transaction, since it needs DNS; the sender
checks again per attempt); a new endpoint starts at the customer's current
event; its secret is sealed at rest and returned only by create and rotate;
a rotation keeps the old secret signing for the grace period; a deleted
endpoint's pending deliveries fail; re-enabling clears why it was disabled.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from convhub.server.config import Settings
from convhub.server.errors import InvalidArgument
from convhub.server.events.webhooks.policy import WebhookPolicy
from convhub.server.events.webhooks.signing import new_secret
from convhub.server.events.webhooks.targets import TargetError, parse_url, resolve
from convhub.server.services.errors import found
from convhub.server.services.resources import StoredEnum, timestamp
from convhub.server.store import idempotency
from convhub.server.store import webhooks as store
from convhub.server.store.db import Database, retry_on_conflict
from convhub.server.store.faults import WriteWouldWait
from convhub.server.store.pages import Page
from convhub.v1 import webhook_pb2

T = TypeVar("T")

IDEMPOTENCY_METHOD = "CreateWebhookEndpoint"  # the request-id namespace (stored: do not rename)
DELIVERY_STATUS: StoredEnum[webhook_pb2.WebhookDeliveryStatus.ValueType] = StoredEnum(
    webhook_pb2.WebhookDeliveryStatus.DESCRIPTOR
)


def webhook_endpoint(row: Any, secret: str | None = None) -> webhook_pb2.WebhookEndpoint:
    """The endpoint as callers see it: the stored secret is never copied, only a fresh one passed in."""
    return webhook_pb2.WebhookEndpoint(
        id=row.id,
        customer_id=row.customer_id,
        url=row.url,
        event_types=row.event_types,
        description=row.description,
        disabled=row.disabled,
        disabled_reason=row.disabled_reason,
        secret=secret or "",
        customer_default=row.customer_default,
        tm_create=timestamp(row.tm_create),
        tm_update=timestamp(row.tm_update),
        tm_delete=timestamp(row.tm_delete),
    )


def webhook_delivery(row: Any) -> webhook_pb2.WebhookDelivery:
    return webhook_pb2.WebhookDelivery(
        id=row.id,
        customer_id=row.customer_id,
        webhook_endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_sequence=row.event_sequence,
        event_type=row.event_type,
        status=DELIVERY_STATUS.number(row.status),
        attempts=row.attempts,
        last_response_code=row.last_response_code,
        last_error=row.last_error,
        tm_next_attempt=timestamp(row.next_attempt_at if row.status == store.PENDING else None),
        tm_create=timestamp(row.tm_create),
        tm_update=timestamp(row.tm_update),
    )


@dataclass(frozen=True)
class NewEndpoint:
    customer_id: str
    url: str
    description: str = ""
    event_types: tuple[str, ...] = ()  # known type names; empty: every type
    disabled: bool = False
    request_id: str | None = None


@dataclass(frozen=True)
class EndpointPatch:
    """An update (AIP-134): only `fields` (url, description, event_types, disabled) are written."""

    customer_id: str
    endpoint_id: str
    fields: frozenset[str]
    url: str = ""
    description: str = ""
    event_types: tuple[str, ...] = ()
    disabled: bool = False


class WebhookTransactions:
    """What the webhook use cases share: the database, the policy, where their transactions run."""

    def __init__(self, db: Database, settings: Settings, executor: Executor | None) -> None:
        self.db = db
        self.policy = WebhookPolicy.from_settings(settings)
        self._executor = executor

    async def in_transaction(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a transaction where writes may run: inline on SQLite, on a database thread on PostgreSQL.

        SQLite's write lock taken by another process sends it to a thread too (store/sqlite_locks.py);
        the thread runs in the call's context, so the call's deadline bounds its commit.
        """
        if self.db.inline_writes:
            try:
                return fn(*args)
            except WriteWouldWait:
                pass
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._executor, context.run, fn, *args)

    async def checked_url(self, field: str, url: str) -> str:
        """`url` if it is http(s) and every address it resolves to may receive webhooks."""
        try:
            await resolve(parse_url(url), self.policy.allowed_networks)
        except TargetError as exc:
            raise InvalidArgument(field, str(exc)) from None
        return url

    def seal(self, secret: str) -> str:
        return self.db.secrets.seal(secret)


class WebhookService(WebhookTransactions):
    async def create(self, new: NewEndpoint) -> webhook_pb2.WebhookEndpoint:
        await self.checked_url("webhook_endpoint.url", new.url)
        return await self.in_transaction(self._create, new)

    @retry_on_conflict
    def _create(self, new: NewEndpoint) -> webhook_pb2.WebhookEndpoint:
        with self.db.writer.begin() as conn:
            if new.request_id:
                existing = idempotency.lookup(conn, new.customer_id, IDEMPOTENCY_METHOD, new.request_id)
                if existing:  # the secret was shown to the first call only
                    return webhook_endpoint(store.live.by_id(conn, existing))
            secret = new_secret()
            endpoint_id = store.insert_endpoint(
                conn,
                new.customer_id,
                self.seal(secret),
                url=new.url,
                description=new.description,
                event_types=list(new.event_types),
                disabled=new.disabled,
                disabled_reason="",
                customer_default=False,
            )
            if new.request_id:
                idempotency.record(conn, new.customer_id, IDEMPOTENCY_METHOD, new.request_id, endpoint_id)
            return webhook_endpoint(store.live.by_id(conn, endpoint_id), secret)

    def list(self, customer_id: str, page: Page) -> tuple[list[webhook_pb2.WebhookEndpoint], str]:
        with self.db.read() as conn:
            rows, token = store.live.page(conn, page, customer_id)
        return [webhook_endpoint(r) for r in rows], token

    def get(self, customer_id: str, endpoint_id: str) -> webhook_pb2.WebhookEndpoint:
        with self.db.read() as conn:
            row = store.live.get(conn, customer_id, endpoint_id)
        return webhook_endpoint(found(row, "webhook_endpoint", endpoint_id))

    async def update(self, patch: EndpointPatch) -> webhook_pb2.WebhookEndpoint:
        if "url" in patch.fields:
            await self.checked_url("webhook_endpoint.url", patch.url)
        return await self.in_transaction(self._update, patch)

    def _update(self, patch: EndpointPatch) -> webhook_pb2.WebhookEndpoint:
        values: dict[str, Any] = {}
        if "url" in patch.fields:
            values["url"] = patch.url
        if "description" in patch.fields:
            values["description"] = patch.description
        if "event_types" in patch.fields:
            values["event_types"] = list(patch.event_types)
        if "disabled" in patch.fields:
            values["disabled"] = patch.disabled
            if not patch.disabled:
                values["disabled_reason"] = ""
        with self.db.writer.begin() as conn:
            found(store.live.get(conn, patch.customer_id, patch.endpoint_id), "webhook_endpoint", patch.endpoint_id)
            store.update_endpoint(conn, patch.endpoint_id, values)
            return webhook_endpoint(store.live.by_id(conn, patch.endpoint_id))

    def delete(self, customer_id: str, endpoint_id: str) -> webhook_pb2.WebhookEndpoint:
        with self.db.writer.begin() as conn:
            found(store.live.get(conn, customer_id, endpoint_id), "webhook_endpoint", endpoint_id)
            store.delete_endpoint(conn, endpoint_id)
            return webhook_endpoint(store.live.by_id(conn, endpoint_id))

    def rotate_secret(self, customer_id: str, endpoint_id: str) -> webhook_pb2.WebhookEndpoint:
        secret = new_secret()
        with self.db.writer.begin() as conn:
            row = found(store.live.get(conn, customer_id, endpoint_id), "webhook_endpoint", endpoint_id)
            store.rotate_secret(conn, endpoint_id, row.secret, self.seal(secret), self.policy.rotation_grace_us)
            return webhook_endpoint(store.live.by_id(conn, endpoint_id), secret)

    def list_deliveries(
        self, customer_id: str, endpoint_id: str, status: str | None, page: Page
    ) -> tuple[builtins.list[webhook_pb2.WebhookDelivery], str]:  # `list` is a method here
        with self.db.read() as conn:
            found(store.live.get(conn, customer_id, endpoint_id), "webhook_endpoint", endpoint_id)
            rows, token = store.delivery_page(conn, page, customer_id, endpoint_id, status)
        return [webhook_delivery(r) for r in rows], token

    def retry_delivery(self, customer_id: str, endpoint_id: str, delivery_id: str) -> webhook_pb2.WebhookDelivery:
        with self.db.writer.begin() as conn:
            found(store.live.get(conn, customer_id, endpoint_id), "webhook_endpoint", endpoint_id)
            row = found(store.delivery(conn, customer_id, endpoint_id, delivery_id), "webhook_delivery", delivery_id)
            store.retry_delivery(conn, row)
            return webhook_delivery(store.delivery(conn, customer_id, endpoint_id, delivery_id))
