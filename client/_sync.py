# Generated from client/_async.py by `python client/generate_sync.py`: edit that file, not this one.
"""Blocking client over a plain `grpc` channel, for scripts and threaded code.

Generated from the event-loop client in `_async.py`, so it mirrors it method for
method; every RPC goes through `_call`, the single place that adds the token,
applies the deadline, retries and maps errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from convhub.v1 import (
    account_pb2,
    account_service_pb2,
    account_service_pb2_grpc,
    common_pb2,
    conversation_pb2,
    conversation_service_pb2_grpc,
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    ingest_service_pb2,
    ingest_service_pb2_grpc,
    message_pb2,
    participant_pb2,
    webhook_pb2,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)
from convhub.v1 import conversation_service_pb2 as cs_pb2

from . import _base
from ._base import DEFAULT_TARGET, DEFAULT_TIMEOUT, ChannelOption, ClientOptions, EventTypes, Page
from .errors import ConvhubError, from_rpc_error
from .retry import Deadline, RetryPolicy

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_T = TypeVar("_T")


class ConvhubClient:
    """Synchronous convhub client.

    Args:
        target: `host:port` of the convhub gRPC server.
        token: API token, sent as `authorization: Bearer <token>`.
        timeout: default deadline per call in seconds, retries included
            (None: no deadline); each method takes `timeout=` to override.
        retry: backoff policy for UNAVAILABLE (see `convhub.client.retry`).
        secure: use TLS with the system roots; `credentials` gives your own.
        keepalive_time / keepalive_timeout: HTTP/2 keepalive pings, seconds.
        options: extra gRPC channel arguments, e.g. `("grpc.max_receive_message_length", ...)`.

    Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        secure: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        keepalive_time: float | None = None,
        keepalive_timeout: float = 20.0,
        options: Sequence[ChannelOption] = (),
    ) -> None:
        self._opts = ClientOptions(
            target=target,
            token=token,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            secure=secure,
            credentials=credentials,
            keepalive_time=keepalive_time,
            keepalive_timeout=keepalive_timeout,
            options=options,
        )
        creds = self._opts.channel_credentials
        opts = self._opts.channel_options()
        self._channel = (
            grpc.secure_channel(target, creds, options=opts)
            if creds is not None
            else grpc.insecure_channel(target, options=opts)
        )
        self._metadata = self._opts.metadata()
        self._conv = conversation_service_pb2_grpc.ConversationServiceStub(self._channel)
        self._acct = account_service_pb2_grpc.AccountServiceStub(self._channel)
        self._ingest = ingest_service_pb2_grpc.IngestServiceStub(self._channel)
        self._events = event_service_pb2_grpc.EventServiceStub(self._channel)
        self._webhooks = webhook_service_pb2_grpc.WebhookServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # -- plumbing ---------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ConvhubClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        *,
        idempotent: bool,
        timeout: float | None,
    ) -> _Resp:
        """Run one RPC: token, overall deadline, UNAVAILABLE retries, error mapping."""
        deadline = Deadline.after(self._opts.effective_timeout(timeout))
        policy = self._opts.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(request, timeout=deadline.remaining(), metadata=self._metadata)
            except grpc.RpcError as err:
                delay = policy.delay_before_retry(attempt, err.code(), idempotent=idempotent, deadline=deadline)
                if delay is None:
                    raise from_rpc_error(err) from err
            time.sleep(delay)

    @staticmethod
    def _walk(fetch: Callable[[str], Page[_T]]) -> Iterator[_T]:
        token = ""
        while True:
            page = fetch(token)
            yield from page.result
            _base.check_progress(page.next_page_token, token)
            token = page.next_page_token
            if not token:
                return

    def health(self, service: str = "", *, timeout: float | None = None) -> health_pb2.HealthCheckResponse:
        """`grpc.health.v1.Health/Check` for the whole server ("") or one service."""
        request = health_pb2.HealthCheckRequest(service=service)
        response: health_pb2.HealthCheckResponse = self._call(
            self._health.Check, request, idempotent=True, timeout=timeout
        )
        return response

    # -- conversations ----------------------------------------------------

    def list_conversations(
        self,
        page_size: int = 0,
        page_token: str = "",
        *,
        where: cs_pb2.ListConversationsRequest | None = None,
        timeout: float | None = None,
    ) -> cs_pb2.ListConversationsResponse:
        """One page; `where` carries the filters (owner_id, tag, state, type, peer, updated_since)."""
        request = cs_pb2.ListConversationsRequest()
        if where is not None:
            request.CopyFrom(where)
        request.page_size, request.page_token = page_size, page_token
        return self._call(self._conv.ListConversations, request, idempotent=True, timeout=timeout)

    def iter_conversations(
        self,
        page_size: int = 100,
        *,
        where: cs_pb2.ListConversationsRequest | None = None,
        timeout: float | None = None,
    ) -> Iterator[conversation_pb2.Conversation]:
        """Every conversation matching `where`, page after page (`timeout` applies per page)."""
        return self._walk(lambda token: self.list_conversations(page_size, token, where=where, timeout=timeout))

    def get_conversation(self, id: str, *, timeout: float | None = None) -> conversation_pb2.Conversation:
        request = cs_pb2.GetConversationRequest(id=id)
        return self._call(self._conv.GetConversation, request, idempotent=True, timeout=timeout)

    def update_conversation(
        self,
        conversation: conversation_pb2.Conversation,
        update_mask: Iterable[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> conversation_pb2.Conversation:
        request = _base.update_conversation_request(conversation, update_mask)
        return self._call(self._conv.UpdateConversation, request, idempotent=False, timeout=timeout)

    def unassign_conversation(self, id: str, *, timeout: float | None = None) -> conversation_pb2.Conversation:
        """Clear the conversation's owner; repeating it changes nothing more, so it is retried like a read."""
        request = cs_pb2.UnassignConversationRequest(id=id)
        return self._call(self._conv.UnassignConversation, request, idempotent=True, timeout=timeout)

    def delete_conversation(self, id: str, *, timeout: float | None = None) -> conversation_pb2.Conversation:
        request = cs_pb2.DeleteConversationRequest(id=id)
        return self._call(self._conv.DeleteConversation, request, idempotent=False, timeout=timeout)

    def close_conversation(self, id: str, *, timeout: float | None = None) -> conversation_pb2.Conversation:
        """Close it (history kept; the peer's next message opens a new one); closing twice changes nothing."""
        request = cs_pb2.CloseConversationRequest(id=id)
        return self._call(self._conv.CloseConversation, request, idempotent=True, timeout=timeout)

    def reopen_conversation(self, id: str, *, timeout: float | None = None) -> conversation_pb2.Conversation:
        """Reopen a closed one; FailedPreconditionError when another open conversation holds its key."""
        request = cs_pb2.ReopenConversationRequest(id=id)
        return self._call(self._conv.ReopenConversation, request, idempotent=True, timeout=timeout)

    def send_to_address(
        self,
        peer: common_pb2.Address,
        *,
        account_id: str = "",
        self_address: common_pb2.Address | None = None,
        channel: common_pb2.ConversationType.ValueType = common_pb2.CONVERSATION_TYPE_UNSPECIFIED,
        text: str = "",
        medias: Iterable[common_pb2.Media] = (),
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> cs_pb2.SendToAddressResponse:
        """Send to `peer` in its open conversation (or a new one): conversations that start with us.

        `account_id` or `self_address` (the proto's `self`) says which of our
        addresses sends; `request_id` defaults to a new UUID, so a retry
        returns the first message.
        """
        request = _base.send_to_address_request(
            peer,
            account_id=account_id,
            self_address=self_address,
            channel=channel,
            text=text,
            medias=medias,
            request_id=request_id,
        )
        return self._call(self._conv.SendToAddress, request, idempotent=bool(request.request_id), timeout=timeout)

    # -- messages ---------------------------------------------------------

    def list_messages(
        self, conversation_id: str, page_size: int = 0, page_token: str = "", *, timeout: float | None = None
    ) -> cs_pb2.ListMessagesResponse:
        request = cs_pb2.ListMessagesRequest(
            conversation_id=conversation_id, page_size=page_size, page_token=page_token
        )
        return self._call(self._conv.ListMessages, request, idempotent=True, timeout=timeout)

    def iter_messages(
        self, conversation_id: str, page_size: int = 100, *, timeout: float | None = None
    ) -> Iterator[message_pb2.Message]:
        return self._walk(lambda token: self.list_messages(conversation_id, page_size, token, timeout=timeout))

    def get_message(self, conversation_id: str, id: str, *, timeout: float | None = None) -> message_pb2.Message:
        request = cs_pb2.GetMessageRequest(conversation_id=conversation_id, id=id)
        return self._call(self._conv.GetMessage, request, idempotent=True, timeout=timeout)

    def send_message(
        self,
        conversation_id: str,
        text: str = "",
        medias: Iterable[common_pb2.Media] = (),
        *,
        channel: common_pb2.ConversationType.ValueType = common_pb2.CONVERSATION_TYPE_UNSPECIFIED,
        allow_fallback: bool = False,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> message_pb2.Message:
        """Send to the conversation's peer; `request_id` defaults to a new UUID.

        `channel` forces a channel (else convhub chooses); `allow_fallback` lets a
        failing channel move on to the next eligible one.
        """
        request = _base.send_message_request(conversation_id, text, medias, request_id, channel, allow_fallback)
        return self._call(self._conv.SendMessage, request, idempotent=bool(request.request_id), timeout=timeout)

    def delete_message(self, conversation_id: str, id: str, *, timeout: float | None = None) -> message_pb2.Message:
        request = cs_pb2.DeleteMessageRequest(conversation_id=conversation_id, id=id)
        return self._call(self._conv.DeleteMessage, request, idempotent=False, timeout=timeout)

    # -- participants -----------------------------------------------------

    def list_participants(
        self, conversation_id: str, page_size: int = 0, page_token: str = "", *, timeout: float | None = None
    ) -> cs_pb2.ListParticipantsResponse:
        request = cs_pb2.ListParticipantsRequest(
            conversation_id=conversation_id, page_size=page_size, page_token=page_token
        )
        return self._call(self._conv.ListParticipants, request, idempotent=True, timeout=timeout)

    def iter_participants(
        self, conversation_id: str, page_size: int = 100, *, timeout: float | None = None
    ) -> Iterator[participant_pb2.Participant]:
        return self._walk(lambda token: self.list_participants(conversation_id, page_size, token, timeout=timeout))

    def add_participant(
        self,
        conversation_id: str,
        participant: participant_pb2.Participant,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> participant_pb2.Participant:
        request = _base.add_participant_request(conversation_id, participant, request_id)
        return self._call(self._conv.AddParticipant, request, idempotent=bool(request.request_id), timeout=timeout)

    def update_participant(
        self,
        participant: participant_pb2.Participant,
        update_mask: Iterable[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> participant_pb2.Participant:
        request = _base.update_participant_request(participant, update_mask)
        return self._call(self._conv.UpdateParticipant, request, idempotent=False, timeout=timeout)

    def remove_participant(
        self, conversation_id: str, id: str, *, timeout: float | None = None
    ) -> participant_pb2.Participant:
        request = cs_pb2.RemoveParticipantRequest(conversation_id=conversation_id, id=id)
        return self._call(self._conv.RemoveParticipant, request, idempotent=False, timeout=timeout)

    # -- accounts ---------------------------------------------------------

    def create_account(
        self, account: account_pb2.Account, *, request_id: str | None = None, timeout: float | None = None
    ) -> account_pb2.Account:
        request = _base.create_account_request(account, request_id)
        return self._call(self._acct.CreateAccount, request, idempotent=bool(request.request_id), timeout=timeout)

    def list_accounts(
        self, page_size: int = 0, page_token: str = "", *, timeout: float | None = None
    ) -> account_service_pb2.ListAccountsResponse:
        request = account_service_pb2.ListAccountsRequest(page_size=page_size, page_token=page_token)
        return self._call(self._acct.ListAccounts, request, idempotent=True, timeout=timeout)

    def iter_accounts(self, page_size: int = 100, *, timeout: float | None = None) -> Iterator[account_pb2.Account]:
        return self._walk(lambda token: self.list_accounts(page_size, token, timeout=timeout))

    def get_account(self, id: str, *, timeout: float | None = None) -> account_pb2.Account:
        request = account_service_pb2.GetAccountRequest(id=id)
        return self._call(self._acct.GetAccount, request, idempotent=True, timeout=timeout)

    def update_account(
        self,
        account: account_pb2.Account,
        update_mask: Iterable[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> account_pb2.Account:
        request = account_service_pb2.UpdateAccountRequest(account=account, update_mask=_base.field_mask(update_mask))
        return self._call(self._acct.UpdateAccount, request, idempotent=False, timeout=timeout)

    def delete_account(self, id: str, *, timeout: float | None = None) -> account_pb2.Account:
        request = account_service_pb2.DeleteAccountRequest(id=id)
        return self._call(self._acct.DeleteAccount, request, idempotent=False, timeout=timeout)

    # -- webhook endpoints ------------------------------------------------

    def create_webhook_endpoint(
        self,
        url: str,
        event_types: Iterable[str] = (),
        description: str = "",
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> webhook_pb2.WebhookEndpoint:
        """Register an endpoint (no `event_types`: every type); the answer carries its `secret`, shown only here."""
        endpoint = webhook_pb2.WebhookEndpoint(url=url, event_types=list(event_types), description=description)
        request = webhook_service_pb2.CreateWebhookEndpointRequest(
            webhook_endpoint=endpoint, request_id=_base.request_id_or_new(request_id)
        )
        return self._call(
            self._webhooks.CreateWebhookEndpoint, request, idempotent=bool(request.request_id), timeout=timeout
        )

    def list_webhook_endpoints(
        self, page_size: int = 0, page_token: str = "", *, timeout: float | None = None
    ) -> webhook_service_pb2.ListWebhookEndpointsResponse:
        request = webhook_service_pb2.ListWebhookEndpointsRequest(page_size=page_size, page_token=page_token)
        return self._call(self._webhooks.ListWebhookEndpoints, request, idempotent=True, timeout=timeout)

    def iter_webhook_endpoints(
        self, page_size: int = 100, *, timeout: float | None = None
    ) -> Iterator[webhook_pb2.WebhookEndpoint]:
        return self._walk(lambda token: self.list_webhook_endpoints(page_size, token, timeout=timeout))

    def get_webhook_endpoint(self, id: str, *, timeout: float | None = None) -> webhook_pb2.WebhookEndpoint:
        request = webhook_service_pb2.GetWebhookEndpointRequest(id=id)
        return self._call(self._webhooks.GetWebhookEndpoint, request, idempotent=True, timeout=timeout)

    def update_webhook_endpoint(
        self,
        webhook_endpoint: webhook_pb2.WebhookEndpoint,
        update_mask: Iterable[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> webhook_pb2.WebhookEndpoint:
        request = webhook_service_pb2.UpdateWebhookEndpointRequest(
            webhook_endpoint=webhook_endpoint, update_mask=_base.field_mask(update_mask)
        )
        return self._call(self._webhooks.UpdateWebhookEndpoint, request, idempotent=False, timeout=timeout)

    def delete_webhook_endpoint(self, id: str, *, timeout: float | None = None) -> webhook_pb2.WebhookEndpoint:
        request = webhook_service_pb2.DeleteWebhookEndpointRequest(id=id)
        return self._call(self._webhooks.DeleteWebhookEndpoint, request, idempotent=False, timeout=timeout)

    def rotate_webhook_secret(self, id: str, *, timeout: float | None = None) -> webhook_pb2.WebhookEndpoint:
        """A new `secret` (shown only here); the old one keeps signing too for the rotation grace period."""
        request = webhook_service_pb2.RotateWebhookSecretRequest(id=id)
        return self._call(self._webhooks.RotateWebhookSecret, request, idempotent=False, timeout=timeout)

    def list_webhook_deliveries(
        self,
        webhook_endpoint_id: str,
        status: webhook_pb2.WebhookDeliveryStatus.ValueType = webhook_pb2.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED,
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
    ) -> webhook_service_pb2.ListWebhookDeliveriesResponse:
        request = webhook_service_pb2.ListWebhookDeliveriesRequest(
            webhook_endpoint_id=webhook_endpoint_id, status=status, page_size=page_size, page_token=page_token
        )
        return self._call(self._webhooks.ListWebhookDeliveries, request, idempotent=True, timeout=timeout)

    def iter_webhook_deliveries(
        self,
        webhook_endpoint_id: str,
        status: webhook_pb2.WebhookDeliveryStatus.ValueType = webhook_pb2.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED,
        page_size: int = 100,
        *,
        timeout: float | None = None,
    ) -> Iterator[webhook_pb2.WebhookDelivery]:
        return self._walk(
            lambda token: self.list_webhook_deliveries(webhook_endpoint_id, status, page_size, token, timeout=timeout)
        )

    def retry_webhook_delivery(
        self, webhook_endpoint_id: str, id: str, *, timeout: float | None = None
    ) -> webhook_pb2.WebhookDelivery:
        """Send a delivery again now, with a fresh retry schedule (a failed one stays replayable)."""
        request = webhook_service_pb2.RetryWebhookDeliveryRequest(webhook_endpoint_id=webhook_endpoint_id, id=id)
        return self._call(self._webhooks.RetryWebhookDelivery, request, idempotent=False, timeout=timeout)

    # -- ingest -----------------------------------------------------------

    def ingest_message(
        self,
        peer: common_pb2.Address,
        *,
        account_id: str = "",
        self_address: common_pb2.Address | None = None,
        channel: common_pb2.ConversationType.ValueType = common_pb2.CONVERSATION_TYPE_UNSPECIFIED,
        text: str = "",
        subject: str = "",
        medias: Iterable[common_pb2.Media] = (),
        transaction_id: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> ingest_service_pb2.IngestMessageResponse:
        """File an inbound message from `peer` (`self_address` is the proto's `self`)."""
        request = _base.ingest_message_request(
            peer,
            account_id=account_id,
            self_address=self_address,
            channel=channel,
            text=text,
            subject=subject,
            medias=medias,
            transaction_id=transaction_id,
            request_id=request_id,
        )
        return self._call(self._ingest.IngestMessage, request, idempotent=bool(request.request_id), timeout=timeout)

    # -- events -----------------------------------------------------------

    def list_events(
        self,
        after_sequence: int = 0,
        event_types: EventTypes = (),
        conversation_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
    ) -> event_service_pb2.ListEventsResponse:
        request = _base.list_events_request(after_sequence, event_types, conversation_id, page_size, page_token)
        return self._call(self._events.ListEvents, request, idempotent=True, timeout=timeout)

    def iter_events(
        self,
        after_sequence: int = 0,
        event_types: EventTypes = (),
        conversation_id: str = "",
        page_size: int = 100,
        *,
        timeout: float | None = None,
    ) -> Iterator[event_pb2.Event]:
        """Every stored event after `after_sequence`, page after page (`timeout` applies per page)."""
        return self._walk(
            lambda token: self.list_events(
                after_sequence, event_types, conversation_id, page_size, token, timeout=timeout
            )
        )

    def subscribe_events(
        self,
        after_sequence: int | None = None,
        event_types: EventTypes = (),
        conversation_id: str = "",
        *,
        reconnect: RetryPolicy | None = None,
    ) -> Iterator[event_pb2.Event]:
        """Events as they happen: those after `after_sequence` first (None: only new ones), each once, in order.

        The stream has no deadline. When it breaks (server restart, lost
        connection, or this reader fell too far behind) it is reopened after
        the last event yielded, with backoff (`reconnect`, default about 20 s
        of attempts in a row without an event), so nothing is missed or seen
        twice. Other errors (OUT_OF_RANGE: the events were pruned) are raised.
        Stop by leaving the loop.
        """
        policy = reconnect or _base.RECONNECT
        failures = 0
        while True:
            request = _base.subscribe_events_request(after_sequence, event_types, conversation_id)
            call = self._events.SubscribeEvents(request, metadata=self._metadata)
            error: ConvhubError | None = None
            try:
                for response in call:
                    failures = 0
                    for event in response.events:
                        after_sequence = event.sequence
                        yield event
            except grpc.RpcError as err:
                error = from_rpc_error(err)
            finally:
                call.cancel()
            failures += 1
            delay = _base.resume_delay(error, failures, policy)
            if delay is None:
                if error is None:
                    return
                raise error
            time.sleep(delay)
