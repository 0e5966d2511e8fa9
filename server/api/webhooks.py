"""WebhookService over gRPC/REST: requests -> webhook commands. Secrets appear only in Create and Rotate."""

from __future__ import annotations

from collections.abc import Iterable

from convhub.server.api import pagination, validation
from convhub.server.api.dispatch import Caller, may_run_on_loop
from convhub.server.errors import InvalidArgument
from convhub.server.events.outbox import EVENT_TYPE_NAMES
from convhub.server.services.webhooks import DELIVERY_STATUS, EndpointPatch, NewEndpoint, WebhookService
from convhub.v1 import webhook_pb2
from convhub.v1 import webhook_service_pb2 as pb

WEBHOOK_ENDPOINT_UPDATABLE = ("url", "event_types", "description", "disabled")
MAX_EVENT_TYPES = 50
KNOWN_EVENT_TYPES = frozenset(EVENT_TYPE_NAMES.values())


def event_types(field: str, values: Iterable[str]) -> tuple[str, ...]:
    """Known event type names, without repeats; empty means every type."""
    values = list(values)
    if len(values) > MAX_EVENT_TYPES:
        raise InvalidArgument(field, f"at most {MAX_EVENT_TYPES} entries")
    for i, name in enumerate(values):
        if name not in KNOWN_EVENT_TYPES:
            raise InvalidArgument(f"{field}[{i}]", f"unknown event type {name[:64]!r}")
    return tuple(dict.fromkeys(values))


class WebhookMethods:
    def __init__(self, webhooks: WebhookService) -> None:
        self.webhooks = webhooks

    async def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, caller: Caller
    ) -> webhook_pb2.WebhookEndpoint:
        if not request.HasField("webhook_endpoint"):
            raise InvalidArgument("webhook_endpoint", "is required")
        e = request.webhook_endpoint
        return await self.webhooks.create(
            NewEndpoint(
                customer_id=caller.customer_id,
                url=e.url,
                description=validation.max_length("webhook_endpoint.description", e.description, validation.MAX_DETAIL),
                event_types=event_types("webhook_endpoint.event_types", e.event_types),
                disabled=e.disabled,
                request_id=validation.request_id(request.request_id),
            )
        )

    @may_run_on_loop
    def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, caller: Caller
    ) -> pb.ListWebhookEndpointsResponse:
        page = pagination.parse(request.page_size, request.page_token, "webhook_endpoints")
        result, token = self.webhooks.list(caller.customer_id, page)
        return pb.ListWebhookEndpointsResponse(result=result, next_page_token=token)

    @may_run_on_loop
    def GetWebhookEndpoint(self, request: pb.GetWebhookEndpointRequest, caller: Caller) -> webhook_pb2.WebhookEndpoint:
        return self.webhooks.get(caller.customer_id, validation.require_uuid("id", request.id))

    async def UpdateWebhookEndpoint(
        self, request: pb.UpdateWebhookEndpointRequest, caller: Caller
    ) -> webhook_pb2.WebhookEndpoint:
        if not request.HasField("webhook_endpoint"):
            raise InvalidArgument("webhook_endpoint", "is required")
        e = request.webhook_endpoint
        endpoint_id = validation.require_uuid("webhook_endpoint.id", e.id)
        fields = frozenset(validation.update_fields(request.update_mask, e, WEBHOOK_ENDPOINT_UPDATABLE))
        return await self.webhooks.update(
            EndpointPatch(
                customer_id=caller.customer_id,
                endpoint_id=endpoint_id,
                fields=fields,
                url=e.url,
                description=validation.max_length("webhook_endpoint.description", e.description, validation.MAX_DETAIL),
                event_types=event_types("webhook_endpoint.event_types", e.event_types),
                disabled=e.disabled,
            )
        )

    def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, caller: Caller
    ) -> webhook_pb2.WebhookEndpoint:
        return self.webhooks.delete(caller.customer_id, validation.require_uuid("id", request.id))

    def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, caller: Caller
    ) -> webhook_pb2.WebhookEndpoint:
        return self.webhooks.rotate_secret(caller.customer_id, validation.require_uuid("id", request.id))

    @may_run_on_loop
    def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, caller: Caller
    ) -> pb.ListWebhookDeliveriesResponse:
        endpoint_id = validation.require_uuid("webhook_endpoint_id", request.webhook_endpoint_id)
        status = validation.enum_name("status", DELIVERY_STATUS, request.status, required=False)
        page = pagination.parse(request.page_size, request.page_token, f"webhook_deliveries:{endpoint_id}:{status}")
        result, token = self.webhooks.list_deliveries(caller.customer_id, endpoint_id, status, page)
        return pb.ListWebhookDeliveriesResponse(result=result, next_page_token=token)

    def RetryWebhookDelivery(
        self, request: pb.RetryWebhookDeliveryRequest, caller: Caller
    ) -> webhook_pb2.WebhookDelivery:
        return self.webhooks.retry_delivery(
            caller.customer_id,
            validation.require_uuid("webhook_endpoint_id", request.webhook_endpoint_id),
            validation.require_uuid("id", request.id),
        )
