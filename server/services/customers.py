"""The caller's customer, and its one default webhook endpoint the VoIPBIN way (`webhook_uri`).

The default endpoint is an ordinary endpoint (every event type,
`customer_default`), at most one per customer (a partial unique index);
an empty `webhook_uri` removes it. Its secret is not shown here: rotating it
(WebhookService) is how a VoIPBIN-style client obtains one.
"""

from __future__ import annotations

from sqlalchemy import select

from convhub.server.events.webhooks.signing import new_secret
from convhub.server.services.resources import timestamp
from convhub.server.services.webhooks import WebhookTransactions
from convhub.server.store import webhooks as store
from convhub.server.store.db import retry_on_conflict
from convhub.server.store.models import Customer, table
from convhub.v1 import customer_pb2

_customers = table(Customer)


class CustomerService(WebhookTransactions):
    def get(self, customer_id: str) -> customer_pb2.Customer:
        with self.db.read() as conn:
            customer = conn.execute(select(_customers).where(_customers.c.id == customer_id)).one()
            endpoint = store.default_endpoint(conn, customer_id)
        return customer_pb2.Customer(
            id=customer.id,
            name=customer.name,
            webhook_method="POST" if endpoint is not None else "",
            webhook_uri=endpoint.url if endpoint is not None else "",
            webhook_endpoint_id=endpoint.id if endpoint is not None else "",
            tm_create=timestamp(customer.tm_create),
            tm_update=timestamp(max(customer.tm_update, endpoint.tm_update if endpoint is not None else 0)),
        )

    async def set_webhook(self, customer_id: str, url: str) -> customer_pb2.Customer:
        """Point the default endpoint at `url` (creating it), or remove it when `url` is empty."""
        if url:
            await self.checked_url("customer.webhook_uri", url)
        await self.in_transaction(self._set_webhook, customer_id, url)
        return self.get(customer_id)

    @retry_on_conflict
    def _set_webhook(self, customer_id: str, url: str) -> None:
        with self.db.writer.begin() as conn:
            current = store.default_endpoint(conn, customer_id)
            if not url:
                if current is not None:
                    store.delete_endpoint(conn, current.id)
            elif current is None:
                store.insert_endpoint(
                    conn,
                    customer_id,
                    self.seal(new_secret()),
                    url=url,
                    description="VoIPBIN customer webhook_uri",
                    event_types=[],
                    disabled=False,
                    disabled_reason="",
                    customer_default=True,
                )
            elif current.url != url:
                store.update_endpoint(conn, current.id, {"url": url, "disabled": False, "disabled_reason": ""})
