"""What the sync and async clients share: settings, metadata, request building.

The two clients differ only in how they wait (blocking vs `await`), so
everything that does not wait lives here and is written once: channel
options, the auth header, request construction (including the automatic
`request_id` that makes creates safe to retry) and page walking helpers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import grpc
from google.protobuf import field_mask_pb2

from convhub.v1 import (
    account_pb2,
    account_service_pb2,
    common_pb2,
    conversation_pb2,
    event_pb2,
    event_service_pb2,
    ingest_service_pb2,
    participant_pb2,
)
from convhub.v1 import conversation_service_pb2 as cs_pb2

from .errors import ConvhubError
from .retry import RetryPolicy

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0
USER_AGENT = "convhub-python-client/0.1"

ChannelOption = tuple[str, str | int]
EventTypes = Iterable[event_pb2.EventType.ValueType]

# Reopening a subscription: patient enough to ride out a server restart (about 20 s in all).
RECONNECT = RetryPolicy(max_attempts=10, initial_backoff=0.2, max_backoff=5.0)

T_co = TypeVar("T_co", covariant=True)


class Page(Protocol[T_co]):
    """Any List response: the VoIPBIN shape `result` + `next_page_token`."""

    @property
    def result(self) -> Sequence[T_co]: ...

    @property
    def next_page_token(self) -> str: ...


@dataclass(frozen=True)
class ClientOptions:
    """Connection settings common to both clients (see the client docstrings)."""

    target: str = DEFAULT_TARGET
    token: str | None = None
    timeout: float | None = DEFAULT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    secure: bool = False
    credentials: grpc.ChannelCredentials | None = None
    keepalive_time: float | None = None
    keepalive_timeout: float = 20.0
    options: Sequence[ChannelOption] = ()

    @property
    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials, or None for a plaintext channel."""
        if self.credentials is not None:
            return self.credentials
        return grpc.ssl_channel_credentials() if self.secure else None

    def channel_options(self) -> list[ChannelOption]:
        """gRPC channel arguments; explicit `options` win over our defaults.

        Keepalive is off unless asked for: a server only tolerates pings as
        often as its `grpc.http2.min_recv_ping_interval_without_data_ms`
        allows (5 min by default) and answers more with GOAWAY.
        """
        opts: dict[str, str | int] = {"grpc.primary_user_agent": USER_AGENT}
        if self.keepalive_time is not None:
            opts["grpc.keepalive_time_ms"] = int(self.keepalive_time * 1000)
            opts["grpc.keepalive_timeout_ms"] = int(self.keepalive_timeout * 1000)
        opts.update(dict(self.options))
        return list(opts.items())

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-call metadata: the bearer token, when there is one."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def effective_timeout(self, timeout: float | None) -> float | None:
        """A per-call timeout overrides the client default."""
        return self.timeout if timeout is None else timeout


def request_id_or_new(request_id: str | None) -> str:
    """The caller's idempotency key, or a fresh UUID so a retry is a repeat."""
    return request_id or str(uuid.uuid4())


def field_mask(paths: Iterable[str] | None) -> field_mask_pb2.FieldMask | None:
    return None if paths is None else field_mask_pb2.FieldMask(paths=list(paths))


def update_conversation_request(
    conversation: conversation_pb2.Conversation, update_mask: Iterable[str] | None
) -> cs_pb2.UpdateConversationRequest:
    return cs_pb2.UpdateConversationRequest(conversation=conversation, update_mask=field_mask(update_mask))


def update_participant_request(
    participant: participant_pb2.Participant, update_mask: Iterable[str] | None
) -> cs_pb2.UpdateParticipantRequest:
    return cs_pb2.UpdateParticipantRequest(participant=participant, update_mask=field_mask(update_mask))


def send_message_request(
    conversation_id: str,
    text: str,
    medias: Iterable[common_pb2.Media],
    request_id: str | None,
    channel: common_pb2.ConversationType.ValueType = common_pb2.CONVERSATION_TYPE_UNSPECIFIED,
    allow_fallback: bool = False,
) -> cs_pb2.SendMessageRequest:
    return cs_pb2.SendMessageRequest(
        conversation_id=conversation_id,
        text=text,
        medias=list(medias),
        request_id=request_id_or_new(request_id),
        channel=channel,
        allow_fallback=allow_fallback,
    )


def send_to_address_request(
    peer: common_pb2.Address,
    *,
    account_id: str,
    self_address: common_pb2.Address | None,
    channel: common_pb2.ConversationType.ValueType,
    text: str,
    medias: Iterable[common_pb2.Media],
    request_id: str | None,
) -> cs_pb2.SendToAddressRequest:
    return cs_pb2.SendToAddressRequest(
        account_id=account_id,
        self=self_address,
        peer=peer,
        channel=channel,
        text=text,
        medias=list(medias),
        request_id=request_id_or_new(request_id),
    )


def add_participant_request(
    conversation_id: str, participant: participant_pb2.Participant, request_id: str | None
) -> cs_pb2.AddParticipantRequest:
    return cs_pb2.AddParticipantRequest(
        conversation_id=conversation_id, participant=participant, request_id=request_id_or_new(request_id)
    )


def create_account_request(
    account: account_pb2.Account, request_id: str | None
) -> account_service_pb2.CreateAccountRequest:
    return account_service_pb2.CreateAccountRequest(account=account, request_id=request_id_or_new(request_id))


def ingest_message_request(
    peer: common_pb2.Address,
    *,
    account_id: str,
    self_address: common_pb2.Address | None,
    channel: common_pb2.ConversationType.ValueType,
    text: str,
    subject: str,
    medias: Iterable[common_pb2.Media],
    transaction_id: str,
    request_id: str | None,
) -> ingest_service_pb2.IngestMessageRequest:
    return ingest_service_pb2.IngestMessageRequest(
        account_id=account_id,
        self=self_address,
        peer=peer,
        channel=channel,
        text=text,
        subject=subject,
        medias=list(medias),
        transaction_id=transaction_id,
        request_id=request_id_or_new(request_id),
    )


def check_progress(token: str, previous: str) -> None:
    """Guard page walking against a server that hands back the same token."""
    if token and token == previous:
        raise RuntimeError(f"server returned the same page token twice ({token!r}); refusing to loop")


def list_events_request(
    after_sequence: int, event_types: EventTypes, conversation_id: str, page_size: int, page_token: str
) -> event_service_pb2.ListEventsRequest:
    return event_service_pb2.ListEventsRequest(
        after_sequence=after_sequence,
        event_types=list(event_types),
        conversation_id=conversation_id,
        page_size=page_size,
        page_token=page_token,
    )


def subscribe_events_request(
    after_sequence: int | None, event_types: EventTypes, conversation_id: str
) -> event_service_pb2.SubscribeEventsRequest:
    request = event_service_pb2.SubscribeEventsRequest(event_types=list(event_types), conversation_id=conversation_id)
    if after_sequence is not None:
        request.after_sequence = after_sequence
    return request


def resume_delay(error: ConvhubError | None, failures: int, policy: RetryPolicy) -> float | None:
    """Seconds to wait before reopening a subscription, or None to stop (raise `error`, or end).

    A subscription is reopened, after the last sequence it yielded, when it
    ended with UNAVAILABLE (server restarting or stopping, connection lost),
    with RESOURCE_EXHAUSTED `SUBSCRIBER_TOO_SLOW` (the reader fell behind: the
    server replays from its table), or without an error. `failures` counts
    the attempts in a row that ended so; any event received resets it.
    """
    resumable = (
        error is None
        or error.code == grpc.StatusCode.UNAVAILABLE
        or (error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "SUBSCRIBER_TOO_SLOW")
    )
    if not resumable or failures >= policy.max_attempts:
        return None
    return policy.backoff(failures)
