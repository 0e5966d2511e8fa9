"""The service table: each contract service paired with the handler object serving it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from convhub.server.api.accounts import AccountMethods
from convhub.server.api.auth import StoredTokenAuthenticator
from convhub.server.api.conversations import ConversationMethods
from convhub.server.api.customers import CustomerMethods
from convhub.server.api.dispatch import Dispatcher, collect_methods
from convhub.server.api.events import EventMethods
from convhub.server.api.ingest import IngestMethods
from convhub.server.api.messages import MessageMethods
from convhub.server.api.participants import ParticipantMethods
from convhub.server.api.webhooks import WebhookMethods
from convhub.server.config import Settings
from convhub.server.events.broadcaster import Broadcaster
from convhub.server.events.stream import EventReader
from convhub.server.services.use_cases import UseCases
from convhub.server.store.db import Database
from convhub.v1 import (
    account_service_pb2,
    conversation_service_pb2,
    customer_service_pb2,
    event_service_pb2,
    ingest_service_pb2,
    webhook_service_pb2,
)


class ConversationServiceHandlers(ConversationMethods, MessageMethods, ParticipantMethods):
    """convhub.v1.ConversationService: conversations, their messages and participants."""

    def __init__(self, use_cases: UseCases) -> None:
        self.conversations = use_cases.conversations
        self.messages = use_cases.messages
        self.participants = use_cases.participants
        self.sending = use_cases.sending
        self.lifecycle = use_cases.lifecycle


def build_dispatcher(
    db: Database,
    settings: Settings,
    executor: ThreadPoolExecutor,
    broadcaster: Broadcaster,
    *,
    use_cases: UseCases | None = None,
) -> Dispatcher:
    """Handlers for every contract service over `use_cases` (built here when the caller shares none).

    `broadcaster` feeds live event subscriptions: the process's one, started as a worker.
    """
    use_cases = use_cases or UseCases.build(db, settings, executor)
    services = [
        (
            conversation_service_pb2.DESCRIPTOR.services_by_name["ConversationService"],
            ConversationServiceHandlers(use_cases),
        ),
        (account_service_pb2.DESCRIPTOR.services_by_name["AccountService"], AccountMethods(use_cases.accounts)),
        (ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"], IngestMethods(use_cases.ingest)),
        (webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"], WebhookMethods(use_cases.webhooks)),
        (customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"], CustomerMethods(use_cases.customers)),
        (event_service_pb2.DESCRIPTOR.services_by_name["EventService"], EventMethods(EventReader(db, broadcaster))),
    ]
    return Dispatcher(
        collect_methods(services, inline_writes=db.inline_writes),
        StoredTokenAuthenticator(db),
        executor,
        services=[s for s, _ in services],
    )
