"""AccountService over gRPC/REST: requests -> account commands; credentials are accepted, never returned."""

from __future__ import annotations

from collections.abc import Mapping

from convhub.server.api import pagination, validation
from convhub.server.api.dispatch import Caller, may_run_on_loop
from convhub.server.domain.addresses import Address
from convhub.server.domain.updates import ACCOUNT_UPDATABLE
from convhub.server.errors import InvalidArgument
from convhub.server.services import resources
from convhub.server.services.accounts import AccountPatch, AccountService, NewAccount
from convhub.v1 import account_pb2
from convhub.v1 import account_service_pb2 as pb


def _credentials(values: Mapping[str, str]) -> dict[str, str]:
    creds = dict(values)
    if len(creds) > validation.MAX_CREDENTIALS:
        raise InvalidArgument("account.credentials", f"at most {validation.MAX_CREDENTIALS} entries")
    for key, value in creds.items():
        if not key:
            raise InvalidArgument("account.credentials", "keys must not be empty")
        validation.max_length(f"account.credentials[{key[:64]}]", key, 64)
        validation.max_length(f"account.credentials[{key}]", value, validation.MAX_CREDENTIAL_VALUE)
    return creds


def _timeout(account: account_pb2.Account) -> int:
    value = account.inactivity_timeout_seconds
    if value < 0:
        raise InvalidArgument("account.inactivity_timeout_seconds", "must not be negative")
    return int(value)


def _secret(field: str, value: str) -> str:
    return validation.max_length(f"account.{field}", value, validation.MAX_CREDENTIAL_VALUE)


def _address(account: account_pb2.Account) -> Address | None:
    return validation.address("account.address", account.address) if account.HasField("address") else None


def _flow_id(value: str) -> str:
    return validation.optional_uuid("account.message_flow_id", value) or ""


class AccountMethods:
    def __init__(self, accounts: AccountService) -> None:
        self.accounts = accounts

    def CreateAccount(self, request: pb.CreateAccountRequest, caller: Caller) -> account_pb2.Account:
        if not request.HasField("account"):
            raise InvalidArgument("account", "is required")
        a = request.account
        account_type = validation.enum_name("account.type", resources.ACCOUNT_TYPE, a.type, required=True)
        assert account_type is not None
        return self.accounts.create(
            NewAccount(
                customer_id=caller.customer_id,
                type=account_type,
                name=validation.max_length("account.name", a.name, validation.MAX_NAME),
                detail=validation.max_length("account.detail", a.detail, validation.MAX_DETAIL),
                credentials=_credentials(a.credentials),
                message_flow_id=_flow_id(a.message_flow_id),
                address=_address(a),
                request_id=validation.request_id(request.request_id),
                provider=validation.max_length("account.provider", a.provider, 16),
                enabled=a.enabled if a.HasField("enabled") else True,
                inactivity_timeout_s=_timeout(a),
                secret=_secret("secret", a.secret),
                token=_secret("token", a.token),
            )
        )

    @may_run_on_loop
    def ListAccounts(self, request: pb.ListAccountsRequest, caller: Caller) -> pb.ListAccountsResponse:
        page = pagination.parse(request.page_size, request.page_token, "accounts")
        result, token = self.accounts.list(caller.customer_id, page)
        return pb.ListAccountsResponse(result=result, next_page_token=token)

    @may_run_on_loop
    def GetAccount(self, request: pb.GetAccountRequest, caller: Caller) -> account_pb2.Account:
        return self.accounts.get(caller.customer_id, validation.require_uuid("id", request.id))

    def UpdateAccount(self, request: pb.UpdateAccountRequest, caller: Caller) -> account_pb2.Account:
        if not request.HasField("account"):
            raise InvalidArgument("account", "is required")
        a = request.account
        account_id = validation.require_uuid("account.id", a.id)
        fields = frozenset(validation.update_fields(request.update_mask, a, ACCOUNT_UPDATABLE))
        return self.accounts.update(
            AccountPatch(
                customer_id=caller.customer_id,
                account_id=account_id,
                fields=fields,
                name=validation.max_length("account.name", a.name, validation.MAX_NAME) if "name" in fields else "",
                detail=(
                    validation.max_length("account.detail", a.detail, validation.MAX_DETAIL)
                    if "detail" in fields
                    else ""
                ),
                address=_address(a) if "address" in fields else None,
                credentials=_credentials(a.credentials) if "credentials" in fields else {},
                message_flow_id=_flow_id(a.message_flow_id) if "message_flow_id" in fields else "",
                enabled=a.enabled,
                inactivity_timeout_s=_timeout(a) if "inactivity_timeout_seconds" in fields else 0,
                secret=_secret("secret", a.secret) if "secret" in fields else "",
                token=_secret("token", a.token) if "token" in fields else "",
            )
        )

    def DeleteAccount(self, request: pb.DeleteAccountRequest, caller: Caller) -> account_pb2.Account:
        return self.accounts.delete(caller.customer_id, validation.require_uuid("id", request.id))
