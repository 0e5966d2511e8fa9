"""CustomerService over gRPC/REST: the caller's customer; `webhook_uri` manages its default webhook endpoint."""

from __future__ import annotations

from convhub.server.api import validation
from convhub.server.api.dispatch import Caller, may_run_on_loop
from convhub.server.errors import InvalidArgument
from convhub.server.services.customers import CustomerService
from convhub.v1 import customer_pb2
from convhub.v1 import customer_service_pb2 as pb

CUSTOMER_UPDATABLE = ("webhook_method", "webhook_uri")
WEBHOOK_METHODS = ("POST",)


class CustomerMethods:
    def __init__(self, customers: CustomerService) -> None:
        self.customers = customers

    @may_run_on_loop
    def GetCustomer(self, request: pb.GetCustomerRequest, caller: Caller) -> customer_pb2.Customer:
        return self.customers.get(caller.customer_id)

    async def UpdateCustomer(self, request: pb.UpdateCustomerRequest, caller: Caller) -> customer_pb2.Customer:
        if not request.HasField("customer"):
            raise InvalidArgument("customer", "is required")
        c = request.customer
        fields = validation.update_fields(request.update_mask, c, CUSTOMER_UPDATABLE)
        if "webhook_method" in fields and c.webhook_method and c.webhook_method.upper() not in WEBHOOK_METHODS:
            raise InvalidArgument("customer.webhook_method", "only POST is supported")
        if "webhook_uri" not in fields:
            return self.customers.get(caller.customer_id)
        return await self.customers.set_webhook(caller.customer_id, c.webhook_uri)
