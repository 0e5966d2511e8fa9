"""The service table: each contract service paired with the handler object serving it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from convhub.server.api.accounts import AccountMethods
from convhub.server.api.auth import TokenAuthenticator
from convhub.server.api.conversations import ConversationMethods
from convhub.server.api.dispatch import Dispatcher, collect_methods
from convhub.server.api.ingest import IngestMethods
from convhub.server.api.messages import MessageMethods
from convhub.server.api.participants import ParticipantMethods
from convhub.server.config import Settings
from convhub.server.store.db import Database
from convhub.v1 import account_service_pb2, conversation_service_pb2, ingest_service_pb2


class ConversationServiceHandlers(ConversationMethods, MessageMethods, ParticipantMethods):
    """convhub.v1.ConversationService: conversations, their messages and participants."""


def build_dispatcher(db: Database, settings: Settings, executor: ThreadPoolExecutor) -> Dispatcher:
    services = [
        (
            conversation_service_pb2.DESCRIPTOR.services_by_name["ConversationService"],
            ConversationServiceHandlers(db, settings),
        ),
        (account_service_pb2.DESCRIPTOR.services_by_name["AccountService"], AccountMethods(db, settings)),
        (ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"], IngestMethods(db, settings, executor)),
    ]
    return Dispatcher(
        collect_methods(services, inline_writes=db.inline_writes),
        TokenAuthenticator(db),
        executor,
        services=[s for s, _ in services],
    )
