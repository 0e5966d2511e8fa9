"""The process's use cases, built once: every transport (gRPC, REST, provider hooks) calls these instances.

One instance each matters for ingest: its group commit batches calls from
every transport together only if they share the same IngestService.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

from convhub.server.config import Settings
from convhub.server.services.accounts import AccountService
from convhub.server.services.channel_accounts import ChannelAccountService
from convhub.server.services.conversations import ConversationService
from convhub.server.services.customers import CustomerService
from convhub.server.services.delivery import DeliveryService
from convhub.server.services.ingest import IngestService
from convhub.server.services.lifecycle import LifecycleService
from convhub.server.services.messages import MessageService
from convhub.server.services.participants import ParticipantService
from convhub.server.services.sending import SendingService
from convhub.server.services.webhooks import WebhookService
from convhub.server.store.db import Database
from convhub.server.store.doorbell import Doorbell


@dataclass(frozen=True)
class UseCases:
    accounts: AccountService
    conversations: ConversationService
    messages: MessageService
    participants: ParticipantService
    ingest: IngestService
    webhooks: WebhookService
    customers: CustomerService
    sending: SendingService
    delivery: DeliveryService
    lifecycle: LifecycleService
    channel_accounts: ChannelAccountService
    # Rung after a commit that queued delivery jobs; the delivery worker listens. Not the events
    # doorbell: that one rings on every inbound batch, which would send the worker to the jobs table for nothing.
    delivery_bell: Doorbell

    @classmethod
    def build(cls, db: Database, settings: Settings, executor: Executor | None) -> UseCases:
        """`executor` runs ingest's and sending's group-commit writes and, on PostgreSQL, the webhook writes."""
        bell = Doorbell()
        return cls(
            accounts=AccountService(db, settings),
            conversations=ConversationService(db, settings),
            messages=MessageService(db, settings),
            participants=ParticipantService(db, settings),
            ingest=IngestService(db, settings, executor),
            webhooks=WebhookService(db, settings, executor),
            customers=CustomerService(db, settings, executor),
            sending=SendingService(db, settings, bell, executor),
            delivery=DeliveryService(db, settings, bell),
            lifecycle=LifecycleService(db),
            channel_accounts=ChannelAccountService(db),
            delivery_bell=bell,
        )
